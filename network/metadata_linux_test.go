package network

import (
	"net"
	"os/exec"
	"strings"
	"testing"
)

// TestFilterMetadataAddress: an instance reaches no link-local address
// through the host, which is where clouds serve instance metadata and the
// node's credentials (169.254.169.254). The "metadata server" is a network
// namespace of the test's own, routed from the host by a veth, so nothing
// leaves the machine; a routable address on the same veth is the positive
// control (instances keep their egress).
func TestFilterMetadataAddress(t *testing.T) {
	e := newFilterEnv(t)
	a := e.setup("a", "tenant-a", nil)

	const (
		meta  = "169.254.77.77" // metadata-style (link-local) address
		hostA = "169.254.77.1"  // the host's end, link-local too
		outer = "198.51.100.77" // a routable address (TEST-NET-2), the control
	)
	ns := "cubemeta" + randHex(t, 3)
	host, peer := "cubemh"+randHex(t, 3), "cubemp"+randHex(t, 3)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	run("link", "set", peer, "netns", ns)
	run("addr", "add", hostA+"/32", "dev", host)
	run("link", "set", host, "up")
	run("route", "add", meta+"/32", "dev", host)
	run("route", "add", outer+"/32", "dev", host)
	run("-n", ns, "addr", "add", meta+"/32", "dev", peer)
	run("-n", ns, "addr", "add", outer+"/32", "dev", peer)
	run("-n", ns, "link", "set", peer, "up")
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "route", "add", hostA+"/32", "dev", peer)
	run("-n", ns, "route", "add", "default", "via", hostA, "dev", peer, "onlink")
	serveGreeting(t, "/run/netns/"+ns, 80, "metadata")

	// Positive controls: the host reaches the metadata server, and the
	// instance reaches the routable address of the same namespace.
	if got, err := readGreeting(net.JoinHostPort(meta, "80")); err != nil || got != "metadata" {
		t.Fatalf("host: %s = %q, %v; want %q", meta, got, err, "metadata")
	}
	if got, err := dialFrom(a.att.NetNS, net.JoinHostPort(outer, "80"), markerWait); err != nil || got != "metadata" {
		t.Fatalf("positive control: instance to %s = %q, %v; want %q", outer, got, err, "metadata")
	}
	if got, err := dialFrom(a.att.NetNS, net.JoinHostPort(meta, "80"), blockedWait); err == nil {
		t.Errorf("instance reached the link-local (metadata) address %s (%q); want it dropped", meta, got)
	}
}
