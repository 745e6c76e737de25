package tap

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func requireNetAdmin(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, tun, tc): run as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("/dev/net/tun missing but CI=true")
		}
		t.Skip("/dev/net/tun missing: load the tun module")
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// twoNetns makes namespace A holding eth0 and namespace B holding its veth
// peer "peer" (the CNI side of an instance, and a stand-in for the node).
func twoNetns(t *testing.T) (a, b string) {
	t.Helper()
	buf := make([]byte, 3)
	rand.Read(buf)
	sfx := hex.EncodeToString(buf)
	na, nb := "cube-tapA-"+sfx, "cube-tapB-"+sfx
	run(t, "ip", "netns", "add", na)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", na).Run() })
	run(t, "ip", "netns", "add", nb)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nb).Run() })
	run(t, "ip", "link", "add", "vt"+sfx, "type", "veth", "peer", "name", "vp"+sfx)
	run(t, "ip", "link", "set", "vt"+sfx, "netns", na, "name", "eth0")
	run(t, "ip", "link", "set", "vp"+sfx, "netns", nb, "name", "peer")
	run(t, "ip", "-n", nb, "link", "set", "peer", "up")
	return "/run/netns/" + na, "/run/netns/" + nb
}

// testEtherType is IEEE's local experimental type: no stack answers it.
const testEtherType = 0x88b5

func frame(dst, src net.HardwareAddr, payload string) []byte {
	f := append(append(append([]byte{}, dst...), src...), 0, 0)
	binary.BigEndian.PutUint16(f[12:], testEtherType)
	return append(f, payload...)
}

// readFrame reads from fd until a frame of testEtherType carrying payload
// arrives (other traffic, e.g. IPv6 solicitations, is skipped) or the
// deadline passes.
func readFrame(t *testing.T, fd int, payload string) []byte {
	return readFrameAt(t, fd, payload, 0)
}

// readFrameAt is readFrame for frames that start at off (after a
// virtio-net header on a tap file).
func readFrameAt(t *testing.T, fd int, payload string, off int) []byte {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no frame with %q within 5s", payload)
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds())+1)
		if err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		if n == 0 {
			continue
		}
		m, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		f := buf[:m]
		if len(f) >= off+14 && binary.BigEndian.Uint16(f[off+12:]) == testEtherType && bytes.Contains(f, []byte(payload)) {
			return append([]byte(nil), f...)
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket is an AF_PACKET socket bound to link in the namespace ns.
func packetSocket(t *testing.T, ns, link string) (int, int) {
	t.Helper()
	var fd, idx int
	err := inNetNS(ns, func() error {
		l, err := netlink.LinkByName(link)
		if err != nil {
			return err
		}
		idx = l.Attrs().Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, idx
}

// TestRedirectBothWays: a frame the guest writes to the tap leaves through
// eth0 and reaches the veth peer, and a frame the peer sends to eth0's MAC
// comes out of the tap.
func TestRedirectBothWays(t *testing.T) {
	requireNetAdmin(t)
	nsA, nsB := twoNetns(t)
	mac, err := Setup(nsA, "eth0", "tap0")
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { Remove(nsA, "eth0", "tap0") })
	var ethMAC net.HardwareAddr
	inNetNS(nsA, func() error {
		l, err := netlink.LinkByName("eth0")
		if err == nil {
			ethMAC = l.Attrs().HardwareAddr
		}
		return err
	})
	inNetNS(nsA, func() error {
		if b, _ := os.ReadFile("/proc/sys/net/ipv6/conf/tap0/disable_ipv6"); string(b) != "1\n" {
			t.Errorf("ipv6 on tap0 = %q; want disabled", b)
		}
		return nil
	})
	if mac.String() != ethMAC.String() {
		t.Errorf("Setup returned MAC %s; want eth0's %s", mac, ethMAC)
	}
	tapf, err := Open(nsA, "tap0")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer tapf.Close()
	peer, peerIdx := packetSocket(t, nsB, "peer")

	// Guest -> tap -> eth0 -> peer.
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	out := frame(bcast, mac, "from-guest")
	if _, err := tapf.Write(append(make([]byte, VNetHdrLen), out...)); err != nil {
		t.Fatalf("write to tap: %v", err)
	}
	if got := readFrame(t, peer, "from-guest"); !bytes.Equal(got[:len(out)], out) {
		t.Errorf("peer got %x; want %x", got, out)
	}

	// Peer -> eth0 -> tap -> guest.
	in := frame(mac, net.HardwareAddr{0x02, 0, 0, 0, 0, 9}, "to-guest")
	if err := unix.Sendto(peer, in, 0, &unix.SockaddrLinklayer{Ifindex: peerIdx, Halen: 6, Addr: [8]byte{mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]}}); err != nil {
		t.Fatalf("send from peer: %v", err)
	}
	if got := readFrameAt(t, int(tapf.Fd()), "to-guest", VNetHdrLen); !bytes.Equal(got[VNetHdrLen:VNetHdrLen+len(in)], in) {
		t.Errorf("tap got %x; want %x", got, in)
	}
}

// TestSetupIdempotentRemoveClean: Setup twice leaves one tap and one
// filter per direction; Remove (twice) leaves no tap and no qdisc.
func TestSetupIdempotentRemoveClean(t *testing.T) {
	requireNetAdmin(t)
	nsA, _ := twoNetns(t)
	for i := 0; i < 2; i++ {
		if _, err := Setup(nsA, "eth0", "tap0"); err != nil {
			t.Fatalf("Setup #%d: %v", i+1, err)
		}
	}
	h, err := handle(nsA)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, name := range []string{"eth0", "tap0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		fs, err := h.FilterList(l, netlink.MakeHandle(0xffff, 0))
		if err != nil || len(fs) != 1 {
			t.Errorf("%s has %d ingress filters (%v); want 1", name, len(fs), err)
		}
	}
	for i := 0; i < 2; i++ {
		if err := Remove(nsA, "eth0", "tap0"); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
	}
	if _, err := h.LinkByName("tap0"); err == nil {
		t.Errorf("tap0 still exists after Remove")
	}
	l, _ := h.LinkByName("eth0")
	qs, _ := h.QdiscList(l)
	for _, q := range qs {
		if q.Type() == "ingress" {
			t.Errorf("eth0 still has an ingress qdisc after Remove")
		}
	}
	// Remove of a namespace that is gone is no error.
	if err := Remove("/run/netns/cube-tap-nonexistent", "eth0", "tap0"); err != nil {
		t.Errorf("Remove in a missing netns = %v; want nil", err)
	}
}

// TestOpenBeforeSetup: a VM may boot before its tap is wired: Open makes
// a tap that lives as long as its file, Setup then wires that one, frames
// flow, and once the file is closed no tap is left.
func TestOpenBeforeSetup(t *testing.T) {
	requireNetAdmin(t)
	nsA, nsB := twoNetns(t)
	tapf, err := Open(nsA, "tap0")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	mac, err := Setup(nsA, "eth0", "tap0")
	if err != nil {
		tapf.Close()
		t.Fatalf("Setup after Open: %v", err)
	}
	peer, _ := packetSocket(t, nsB, "peer")
	out := frame(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac, "early-tap")
	if _, err := tapf.Write(append(make([]byte, VNetHdrLen), out...)); err != nil {
		t.Fatal(err)
	}
	readFrame(t, peer, "early-tap")
	inNetNS(nsA, func() error {
		if b, _ := os.ReadFile("/proc/sys/net/ipv6/conf/tap0/disable_ipv6"); string(b) != "1\n" {
			t.Errorf("ipv6 on an Open-made tap0 = %q; want disabled", b)
		}
		return nil
	})
	tapf.Close()
	if err := Remove(nsA, "eth0", "tap0"); err != nil {
		t.Fatal(err)
	}
	h, _ := handle(nsA)
	defer h.Close()
	if _, err := h.LinkByName("tap0"); err == nil {
		t.Errorf("tap0 still exists after its file was closed and Remove ran")
	}
}

// TestMoveIsolated: a tap OpenIsolated made (a pooled VM's card) moves
// into an instance's namespace, where Setup wires it and frames written
// on the same queue file reach the instance's network; a name taken in
// the target is refused and the tap stays where it was.
func TestMoveIsolated(t *testing.T) {
	requireNetAdmin(t)
	nsA, nsB := twoNetns(t)
	tapf, err := OpenIsolated("tap0")
	if err != nil {
		t.Fatalf("OpenIsolated: %v", err)
	}
	defer tapf.Close()
	taken, err := Open(nsB, "tap0")
	if err != nil {
		t.Fatal(err)
	}
	if err := Move(tapf, nsB); err == nil {
		t.Errorf("Move into a namespace that has a tap0 succeeded")
	}
	taken.Close()
	if err := Move(tapf, nsA); err != nil {
		t.Fatalf("Move: %v", err)
	}
	mac, err := Setup(nsA, "eth0", "tap0")
	if err != nil {
		t.Fatalf("Setup of the moved tap: %v", err)
	}
	defer Remove(nsA, "eth0", "tap0")
	peer, _ := packetSocket(t, nsB, "peer")
	out := frame(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac, "moved-tap")
	if _, err := tapf.Write(append(make([]byte, VNetHdrLen), out...)); err != nil {
		t.Fatal(err)
	}
	readFrame(t, peer, "moved-tap")
}
