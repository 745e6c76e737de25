package jail

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireJail skips unless the test may build jails: root and a static
// busybox to jail (Debian's busybox-static).
func requireJail(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, mounts, setuid): run as root")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("/bin/busybox missing but CI=true: apt-get install busybox-static")
		}
		t.Skip("/bin/busybox missing: apt-get install busybox-static")
	}
}

func busyboxSpec(t *testing.T, args ...string) Spec {
	root := filepath.Join(t.TempDir(), "jail")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return Spec{
		Path: "/bin/busybox",
		Args: args,
		Root: root,
		Binds: []Bind{
			{Src: "/bin/busybox", Dst: "/bin/busybox", Exec: true},
			{Src: "/dev/null", Dst: "/dev/null", Dev: true, Writable: true},
		},
		UID: 200999, GID: 200998,
		Rlimits: DefaultRlimits(1 << 20),
	}
}

// TestJailedProcess: the jailed process runs as its uid/gid with no
// groups, no capabilities in any set, no_new_privs, an empty environment,
// only the fds it was handed, and its own namespaces.
func TestJailedProcess(t *testing.T) {
	requireJail(t)
	s := busyboxSpec(t, "sleep", "60")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s.ExtraFiles = []*os.File{r}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, err := Start(ctx, s)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := strconv.Itoa(cmd.Process.Pid)

	status, _ := os.ReadFile("/proc/" + pid + "/status")
	want := map[string]string{
		"Uid": "200999\t200999\t200999\t200999", "Gid": "200998\t200998\t200998\t200998", "Groups": "",
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapBnd": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1",
	}
	for _, l := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(l, ":")
		if w, ok := want[k]; ok {
			if strings.TrimSpace(v) != w {
				t.Errorf("%s = %q; want %q", k, strings.TrimSpace(v), w)
			}
			delete(want, k)
		}
	}
	if len(want) != 0 {
		t.Errorf("status lacks %v", want)
	}
	if env, _ := os.ReadFile("/proc/" + pid + "/environ"); len(env) != 0 {
		t.Errorf("environ = %q; want empty", env)
	}
	fds, _ := os.ReadDir("/proc/" + pid + "/fd")
	var names []string
	for _, f := range fds {
		names = append(names, f.Name())
	}
	if strings.Join(names, " ") != "0 1 2 3" {
		t.Errorf("fds = %v; want 0 1 2 3 (stdio and the one passed)", names)
	}
	if target, _ := os.Readlink("/proc/" + pid + "/fd/3"); !strings.HasPrefix(target, "pipe:") {
		t.Errorf("fd 3 -> %s; want the pipe passed", target)
	}
	for _, ns := range []string{"mnt", "net", "ipc", "uts"} {
		mine, _ := os.Readlink("/proc/self/ns/" + ns)
		its, _ := os.Readlink("/proc/" + pid + "/ns/" + ns)
		if mine == its {
			t.Errorf("jailed process shares the %s namespace %s", ns, its)
		}
	}
	limits, _ := os.ReadFile("/proc/" + pid + "/limits")
	if !strings.Contains(string(limits), "Max core file size        0") {
		t.Errorf("core limit not 0: %s", limits)
	}
	// The jail's root holds only what was bound, and nothing of it shows
	// on the host.
	root := "/proc/" + pid + "/root"
	ents, _ := os.ReadDir(root)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, []string{"bin", "dev"}) {
		t.Errorf("jail root = %v; want [bin dev]", got)
	}
	if host, _ := os.ReadDir(s.Root); len(host) != 0 {
		t.Errorf("the host sees %d entries in the jail dir; want none (own mount namespace)", len(host))
	}
}

// TestGroups: supplementary groups given are the only ones the process has.
func TestGroups(t *testing.T) {
	requireJail(t)
	s := busyboxSpec(t, "sleep", "60")
	s.Groups = []int{107}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, err := Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	status, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
	if !strings.Contains(string(status), "Groups:\t107 \n") && !strings.Contains(string(status), "Groups:\t107\n") {
		t.Errorf("status %s; want Groups: 107", status)
	}
}

// TestJailEscapes runs commands inside the jail that try to get out or
// get privileges back; each must fail.
func TestJailEscapes(t *testing.T) {
	requireJail(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"write the root", []string{"touch", "/x"}},
		{"write a bound file", []string{"sh", "-c", "echo x >> /bin/busybox"}},
		{"see host files", []string{"ls", "/etc/passwd"}},
		{"mount", []string{"mount", "-t", "tmpfs", "x", "/dev"}},
		{"chroot", []string{"chroot", "/", "/bin/busybox", "true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := busyboxSpec(t, tc.args...)
			var out bytes.Buffer
			s.Stdout, s.Stderr = &out, &out
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd, err := Start(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			t.Logf("%v: %v: %s", tc.args, err, out.String())
			if err == nil || !errorsAs(err, &ee) {
				t.Errorf("%v succeeded inside the jail (%v): %s", tc.args, err, out.String())
			}
		})
	}
}

func errorsAs(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

// TestHelperFailure: a jail that cannot be built (a bind source that does
// not exist) fails Start with the helper's reason and leaves no process.
func TestHelperFailure(t *testing.T) {
	requireJail(t)
	s := busyboxSpec(t, "true")
	s.Binds = append(s.Binds, Bind{Src: "/nonexistent/kernel", Dst: "/vm/vmlinux"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Start(ctx, s)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/kernel") {
		t.Errorf("Start = %v; want an error naming the missing file", err)
	}
	s = busyboxSpec(t, "true")
	s.UID = 0
	if _, err := Start(ctx, s); err == nil {
		t.Errorf("Start with uid 0 succeeded; want refused")
	}
}

// TestCgroup: the process is in its cgroup (memory limit set) before it
// execs, and Remove deletes the cgroup once it is gone.
func TestCgroup(t *testing.T) {
	requireJail(t)
	cg := &Cgroup{Path: "/cube-test/jail-" + strconv.Itoa(os.Getpid()) + "/vmm", MemoryBytes: 64 << 20, PidsMax: 16}
	if err := cg.Create(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cg.Remove(context.Background())
		for _, h := range []string{"memory", "pids", "unified", "cpu", "cpuacct"} {
			syscall.Rmdir(filepath.Join("/sys/fs/cgroup", h, filepath.Dir(cg.Path)))
		}
	}()
	s := busyboxSpec(t, "sleep", "60")
	s.Cgroup = cg
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, err := Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	procs, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", cg.Path, "cgroup.procs"))
	limit, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", cg.Path, "memory.limit_in_bytes"))
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(cmd.Process.Pid)) {
		t.Errorf("pid %d not in the memory cgroup (procs %q)", cmd.Process.Pid, procs)
	}
	if strings.TrimSpace(string(limit)) != strconv.Itoa(64<<20) {
		t.Errorf("memory limit = %q; want %d", limit, 64<<20)
	}
	for _, h := range []string{"pids", "cpu", "cpuacct"} {
		procs, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", h, cg.Path, "cgroup.procs"))
		if err == nil && !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(cmd.Process.Pid)) {
			t.Errorf("pid %d not in the %s cgroup", cmd.Process.Pid, h)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	if err := cg.Remove(rctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", cg.Path)); err == nil {
		t.Errorf("cgroup still exists after Remove")
	}
}

// TestAllocateID: ids are distinct per VM, stable for the same VM, and
// reused once released.
func TestAllocateID(t *testing.T) {
	dir := t.TempDir()
	a, err := AllocateID(dir, "vm-a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := AllocateID(dir, "vm-b")
	a2, _ := AllocateID(dir, "vm-a")
	if a != FirstID || b != FirstID+1 || a2 != a {
		t.Errorf("ids a=%d b=%d a again=%d; want %d %d %d", a, b, a2, FirstID, FirstID+1, FirstID)
	}
	if err := ReleaseID(dir, "vm-a"); err != nil {
		t.Fatal(err)
	}
	c, _ := AllocateID(dir, "vm-c")
	if c != FirstID {
		t.Errorf("after release, vm-c got %d; want the freed %d", c, FirstID)
	}
}

// TestSurvivesCallerThreadExit: a VMM started from a goroutine whose OS
// thread then exits (locked and never unlocked) keeps running: the
// parent-death signal is tied to the forking thread, which Start keeps
// alive for the life of the process.
func TestSurvivesCallerThreadExit(t *testing.T) {
	requireJail(t)
	s := busyboxSpec(t, "sleep", "60")
	type result struct {
		cmd *exec.Cmd
		tid int
		err error
	}
	var r result
	// Holding our own thread keeps the goroutines below off it, so they
	// get threads of their own.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for try := 0; ; try++ {
		res := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			if unix.Gettid() == unix.Getpid() {
				// The runtime wedges the main thread instead of
				// ending it: no thread exit to test on it.
				runtime.UnlockOSThread()
				res <- result{tid: -1}
				return
			}
			cmd, err := Start(context.Background(), s)
			res <- result{cmd, unix.Gettid(), err} // still locked: the thread exits with us
		}()
		if r = <-res; r.tid != -1 {
			break
		}
		if try == 100 {
			t.Fatal("every goroutine ran on the main thread")
		}
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer func() { r.cmd.Process.Kill(); r.cmd.Wait() }()
	pidfd, err := unix.PidfdOpen(r.cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	// Wait for the caller's thread to be gone.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat("/proc/self/task/" + strconv.Itoa(r.tid)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			n, _ := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 0)
			st, _ := os.ReadFile("/proc/self/task/" + strconv.Itoa(r.tid) + "/stat")
			t.Fatalf("thread %d did not exit (%s); jailed process dead: %v", r.tid, st, n != 0)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Had the signal fired, the process would be dead by now; give a
	// delivered SIGKILL a moment to land before judging.
	n, _ := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 200)
	if n != 0 {
		t.Errorf("the jailed process died when its caller's thread exited")
	}
}

// TestAllocateIDConcurrent: VMs allocating at once (several shims) never
// share a uid.
func TestAllocateIDConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 20
	ids := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() {
			id, err := AllocateID(dir, "vm-"+strconv.Itoa(i))
			if err != nil {
				t.Error(err)
			}
			ids <- id
		}()
	}
	seen := map[int]bool{}
	for i := 0; i < n; i++ {
		id := <-ids
		if seen[id] {
			t.Errorf("uid %d handed out twice", id)
		}
		seen[id] = true
	}
}
