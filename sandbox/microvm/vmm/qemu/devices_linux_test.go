package qemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/sandbox/microvm/tap"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// TestDevices boots a VM with a read-only and a writable drive, a tap
// wired to a CNI-like eth0 (veth to a second namespace) and the agent
// port, and checks from both sides: the guest sees each drive by its
// serial, cannot write the read-only one and can write the other; its
// card has eth0's MAC; a frame it sends reaches the veth peer; a line it
// writes to cube.agent arrives on the host's agent socket.
func TestDevices(t *testing.T) {
	kernel := requireVM(t)
	nsA, nsB := vethPair(t)
	mac, err := tap.Setup(nsA, "eth0", "tap0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tap.Remove(nsA, "eth0", "tap0") })

	dir := t.TempDir()
	image, rw := filepath.Join(dir, "image.img"), filepath.Join(dir, "rw.img")
	for _, p := range []string{image, rw} {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	payload := "from-guest-" + randomID(t)
	cfg := testConfig(t, kernel, "devices")
	cfg.Cmdline += " cubepayload=" + payload
	cfg.Drives = []vmm.Drive{{ID: "image", Path: image, ReadOnly: true}, {ID: "rw", Path: rw}}
	cfg.Net = &vmm.NIC{NetNS: nsA, Tap: "tap0", MAC: mac}
	peer := packetSocketIn(t, nsB, "peer")

	v := startVM(t, cfg)
	conn, err := net.DialTimeout("unix", cfg.AgentSocket, 5*time.Second)
	if err != nil {
		t.Fatalf("connect to the agent socket: %v", err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(bootDeadline))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "hello-agent\n" {
		t.Errorf("agent socket read %q, %v; want hello-agent", line, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	if err := v.WaitConsole(ctx, "CUBE-DEVICES-DONE"); err != nil {
		t.Fatalf("%v; console:\n%s", err, v.Console())
	}
	console := string(v.Console())
	for _, want := range []string{
		"DRIVE vda image ro=1", "DRIVE vdb rw ro=0",
		"WRITE image false", "WRITE rw true",
		"MAC " + mac.String(), "FRAME sent", "AGENT wrote true",
		// QEMU saw the tap's virtio-net header and offers offloads.
		"NETFEAT csum=1 tso4=1",
	} {
		if !strings.Contains(console, want) {
			t.Errorf("guest console lacks %q:\n%s", want, console)
		}
	}
	if got := readFrameWith(t, peer, payload); !bytes.Equal(got[6:12], mac) {
		t.Errorf("frame at the peer from %x; want the guest MAC %s", got[6:12], mac)
	}
	if e := waitExit(t, v); e.Reason != vmm.ExitPoweroff {
		t.Errorf("exit = %v; want %s", e, vmm.ExitPoweroff)
	}
	b, _ := os.ReadFile(rw)
	if !bytes.HasPrefix(b, []byte("WRITTEN-BY-GUEST")) {
		t.Errorf("rw drive starts %q; want the guest's write", b[:16])
	}
	if b, _ := os.ReadFile(image); !bytes.Equal(b, make([]byte, 1<<20)) {
		t.Errorf("the read-only drive changed")
	}
	assertNothingLeft(t, cfg, v.Pid())
}

func vethPair(t *testing.T) (a, b string) {
	t.Helper()
	buf := make([]byte, 3)
	rand.Read(buf)
	sfx := hex.EncodeToString(buf)
	na, nb := "cube-qA-"+sfx, "cube-qB-"+sfx
	for _, args := range [][]string{
		{"netns", "add", na}, {"netns", "add", nb},
		{"link", "add", "vt" + sfx, "type", "veth", "peer", "name", "vp" + sfx},
		{"link", "set", "vt" + sfx, "netns", na, "name", "eth0"},
		{"link", "set", "vp" + sfx, "netns", nb, "name", "peer"},
		{"-n", nb, "link", "set", "peer", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		if args[0] == "netns" {
			name := args[2]
			t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
		}
	}
	return "/run/netns/" + na, "/run/netns/" + nb
}

// packetSocketIn is an AF_PACKET socket on link inside namespace ns.
func packetSocketIn(t *testing.T, ns, link string) int {
	t.Helper()
	h, err := netns.GetFromPath(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	// A socket belongs to the namespace it was made in: make it there.
	fd, err := socketAt(h, unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	return fd
}

// socketAt makes a socket inside ns on a thread switched there and back;
// a thread that cannot switch back stays locked and dies with us.
func socketAt(ns netns.NsHandle, domain, typ, proto int) (int, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return -1, err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return -1, err
	}
	fd, serr := unix.Socket(domain, typ, proto)
	if err := netns.Set(orig); err != nil {
		return -1, err
	}
	runtime.UnlockOSThread()
	return fd, serr
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func readFrameWith(t *testing.T, fd int, payload string) []byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(time.Until(deadline).Milliseconds())+1)
		if n <= 0 {
			continue
		}
		m, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		f := buf[:m]
		if len(f) >= 14 && binary.BigEndian.Uint16(f[12:]) == 0x88b5 && bytes.Contains(f, []byte(payload)) {
			return append([]byte(nil), f...)
		}
	}
	t.Fatalf("no frame with %q at the peer within 10s", payload)
	return nil
}
