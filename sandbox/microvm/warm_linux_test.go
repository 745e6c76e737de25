package microvm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/jail"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

// warmVM warms a clone of the shared template for the test; the test's
// end closes it unless a sandbox adopted it.
func warmVM(t *testing.T, ctx context.Context) *WarmVM {
	t.Helper()
	id := sandboxtest.RandomID()
	w, err := Warm(ctx, templateOptions(t), sharedTemplate(t), WarmOptions{
		Dir: filepath.Join(t.TempDir(), "warm-"+id), CgroupParent: "/cube-test/warm-" + id,
		// A static binary; as /warm it is no applet and exits 127.
		Program: filepath.Join(vmtest.Image(t).Dir, "bin", "busybox"), Log: sandboxtest.Logger(t)})
	if err != nil {
		t.Fatalf("Warm: %v", err)
	}
	return w
}

// netnsPair is a network namespace with eth0, whose veth peer, in a second
// namespace, has 10.123.0.1/24: where a test's instance lives, and a
// host it can reach.
func netnsPair(t *testing.T) (path, peer string) {
	t.Helper()
	name := "cube-test-" + sandboxtest.RandomID()
	for _, n := range []string{name, name + "-peer"} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
	}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns", name+"-peer")
	ip("-n", name+"-peer", "addr", "add", "10.123.0.1/24", "dev", "peer0")
	ip("-n", name+"-peer", "link", "set", "peer0", "up")
	return "/run/netns/" + name, "/run/netns/" + name + "-peer"
}

// servePeer listens on 10.123.0.1:7777 in the peer namespace and answers
// each connection with a line.
func servePeer(t *testing.T, peer string) {
	t.Helper()
	ns, err := netns.GetFromPath(peer)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	lc := make(chan net.Listener, 1)
	go func() {
		// The socket keeps the namespace it was made in; the thread,
		// switched, is never given back to the runtime.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			lc <- nil
			return
		}
		l, _ := net.Listen("tcp", "10.123.0.1:7777")
		lc <- l
	}()
	l := <-lc
	if l == nil {
		t.Fatal("listen in the peer namespace failed")
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello-from-peer\n"))
			c.Close()
		}
	}()
}

func ethMAC(t *testing.T, nsPath string) string {
	t.Helper()
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr.String()
}

// TestWarmAdopt: an instance adopts a warm VM and runs as in a VM of its
// own: its image and writable layer only (nothing of the rehearsal's),
// its hostname, a boot id of its own, its network reached through its
// namespace, its VMM in its cgroup under its uid; Destroy leaves nothing
// of the warm VM.
func TestWarmAdopt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	other := warmVM(t, ctx)
	defer other.Close(context.Background())
	w := warmVM(t, ctx)
	warmDir, warmCgroup := w.dir, w.cgroup

	nsPath, peer := netnsPair(t)
	servePeer(t, peer)
	id := sandboxtest.RandomID()
	spec := sandbox.Spec{ID: id, Hostname: "h-" + id, StateDir: filepath.Join(t.TempDir(), "state"), CgroupParent: "/cube-test/" + id, NetNS: nsPath,
		Containers: []sandbox.ContainerSpec{sandboxtest.Shell("app",
			`cat /proc/sys/kernel/random/boot_id; hostname; test -e /warm && echo rehearsal-image; ls /containers 2>/dev/null; `+
				`echo mine > /mine; ls /; nc -w 5 10.123.0.1 7777 </dev/null; ip -4 -o addr show eth0`)}}
	spec.Containers[0].RootFS = vmtest.Image(t)
	sb, err := New(spec, sandbox.Options{Logger: sandboxtest.Logger(t), VM: templateOptions(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := UseWarm(sb, w); err != nil {
		t.Fatal(err)
	}
	destroyed := false
	defer func() {
		if !destroyed {
			sb.Destroy(context.Background())
		}
	}()
	if err := sb.Create(ctx); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := sb.Connect(ctx, sandbox.Interface{Name: "eth0", MAC: ethMAC(t, nsPath), Address: "10.123.0.2/24", Gateway: "10.123.0.1"}); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	out := runToEnd(t, ctx, sb)
	t.Logf("adopted:\n%s", out)
	lines := strings.Split(out, "\n")
	if r, err := ReadBootRecord(spec.StateDir); err != nil || r.From != "warm" {
		t.Errorf("boot record %+v, %v; want from warm", r, err)
	}
	if len(lines) < 2 || lines[1] != spec.Hostname {
		t.Errorf("hostname %q; want %q", lines[1:2], spec.Hostname)
	}
	for _, bad := range []string{"rehearsal-image", "warm\n"} {
		if strings.Contains(out, bad) {
			t.Errorf("the instance sees the rehearsal (%q):\n%s", bad, out)
		}
	}
	for _, want := range []string{"mine", "hello-from-peer", "inet 10.123.0.2/24"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Another warm VM of the same template has another boot id.
	otherID, err := other.agent.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if otherID.BootID == "" || otherID.BootID == lines[0] {
		t.Errorf("two warm clones share boot id %q", lines[0])
	}

	pid := sb.(*vmSandbox).Pid()
	procs, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", spec.CgroupParent, "vmm", "cgroup.procs"))
	if err != nil || !strings.Contains("\n"+string(procs), "\n"+strconv.Itoa(pid)+"\n") {
		t.Errorf("the vmm %d is not in the instance's cgroup (%q, %v)", pid, procs, err)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", warmCgroup)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the warm vm's cgroup is left: %v", err)
	}
	uid, err := jail.AllocateID(IDDir, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d", pid), &st); err != nil || int(st.Uid) != uid {
		t.Errorf("the vmm runs as uid %d (%v); want the instance's %d", st.Uid, err, uid)
	}

	destroyed = true
	if err := sb.Destroy(ctx); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := os.Stat(warmDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the warm vm's dir is left after Destroy: %v", err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("the vmm %d is still running after Destroy", pid)
	}
}

// TestWarmMisfit: a warm VM of another size than the sandbox's is not
// adopted: it is stopped and removed, and the sandbox boots as without it.
func TestWarmMisfit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := warmVM(t, ctx)
	pid, dir := w.vm.Pid(), w.dir
	id := sandboxtest.RandomID()
	spec := sandbox.Spec{ID: id, Hostname: "h-" + id, StateDir: filepath.Join(t.TempDir(), "state"), CgroupParent: "/cube-test/" + id,
		MemoryBytes: 200 << 20, Containers: []sandbox.ContainerSpec{sandboxtest.Shell("app", "echo ran")}}
	spec.Containers[0].RootFS = vmtest.Image(t)
	sb, err := New(spec, sandbox.Options{Logger: sandboxtest.Logger(t), VM: templateOptions(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(context.Background())
	if err := UseWarm(sb, w); err != nil {
		t.Fatal(err)
	}
	if err := sb.Create(ctx); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if out := runToEnd(t, ctx, sb); !strings.Contains(out, "ran") {
		t.Errorf("output %q", out)
	}
	if r, _ := ReadBootRecord(spec.StateDir); r.From == "warm" {
		t.Errorf("a warm vm of another size was adopted")
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("the misfit warm vm %d still runs", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the misfit warm vm's dir is left: %v", err)
	}
	if err := UseWarm(sb, w); err == nil {
		t.Errorf("UseWarm after Create succeeded")
	}
}

// TestReleaseWarm: what a warm VM that died unadopted left (its cgroup,
// its uid) is released.
func TestReleaseWarm(t *testing.T) {
	vmtest.Require(t)
	name := "warm-" + sandboxtest.RandomID()
	parent := "/cube-test/" + name
	cg := &jail.Cgroup{Path: parent + "/vmm", MemoryBytes: 64 << 20, PidsMax: 8}
	if err := cg.Create(); err != nil {
		t.Fatal(err)
	}
	uid, err := jail.AllocateID(IDDir, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := ReleaseWarm(context.Background(), name, parent); err != nil {
		t.Fatalf("ReleaseWarm: %v", err)
	}
	for _, h := range []string{"memory", "pids", "cpu"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, parent)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s of %s is left (%v)", parent, h, err)
		}
	}
	// The uid is free: another name gets it (the lowest free one), or at
	// least this name no longer holds it.
	if again, err := jail.AllocateID(IDDir, "other-"+name); err != nil {
		t.Fatal(err)
	} else {
		defer jail.ReleaseID(IDDir, "other-"+name)
		if again != uid {
			if b, _ := os.ReadFile(filepath.Join(IDDir, strconv.Itoa(uid))); string(b) == name {
				t.Errorf("uid %d still belongs to %s", uid, name)
			}
		}
	}
}
