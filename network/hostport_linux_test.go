package network

import (
	"net"
	"strconv"
	"testing"
)

// TestPublishedPortHeldAgainstLateListener: Setup refuses a host port a
// host process has bound, and it must also hold the port afterwards.
// Otherwise a host service that binds it later (a registry, an etcd or a
// daemon restarting) binds fine, and the DNAT of the published port
// silently hands its local clients to the tenant's instance. Safe is
// either: the late bind fails (the port is held), or its clients reach it.
func TestPublishedPortHeldAgainstLateListener(t *testing.T) {
	e := newFilterEnv(t)
	pub := freeHostPort(t)
	a := e.setup("a", "tenant-a", []PortMapping{{HostPort: pub, ContainerPort: 8080}})
	serveGreeting(t, a.att.NetNS, 8080, "tenant")
	addr := "127.0.0.1:" + strconv.Itoa(pub)
	// Positive control: the published port works.
	if got, err := readGreeting(addr); err != nil || got != "tenant" {
		t.Fatalf("published port %s = %q, %v; want %q", addr, got, err, "tenant")
	}

	l, err := net.Listen("tcp4", addr)
	if err != nil {
		return // held: the late service fails loudly instead of being robbed
	}
	greet(t, l, "host service")
	if got, err := readGreeting(addr); got != "host service" {
		t.Errorf("a host service bound %s after it was published; its local client got %q, %v; want the port held or the service reached", addr, got, err)
	}
}
