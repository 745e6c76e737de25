package cinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/guest/cinit/initproto"
	"github.com/cube-platform/cube/guest/cinit/reaper"
)

// Main is cmd/cube-init's main: PID 1 of a container's PID namespace, in
// its own mount and UTS namespaces (the agent cloned it so), its channel
// to the agent on fd 3. It builds the container's root, pivots into it,
// then runs what the agent asks and reports exits, until the container's
// main process exits. It returns only to exit.
func Main() int {
	// The OOM killer must pick the container's process, not its init
	// (lowering the score needs CAP_SYS_RESOURCE, which a VM's init has).
	os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0)
	conn, err := initproto.NewFDConn(initproto.InitFD)
	if err != nil {
		fmt.Fprintln(os.Stderr, "container init:", err)
		return 1
	}
	var cfg initproto.Config
	if _, err := initproto.Recv(conn, initproto.MaxInitMsg, &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "container init: read config:", err)
		return 1
	}
	if err := buildRoot(cfg); err != nil {
		initproto.Send(conn, initproto.Msg{Op: "failed", Error: err.Error()})
		return 1
	}
	sp, err := newSpawner()
	if err != nil {
		initproto.Send(conn, initproto.Msg{Op: "failed", Error: err.Error()})
		return 1
	}
	if err := initproto.Send(conn, initproto.Msg{Op: "ready"}); err != nil {
		return 1
	}
	return (&containerInit{conn: conn, procs: map[int]string{}, spawn: sp}).serve()
}

type containerInit struct {
	conn  *initproto.FDConn
	spawn *spawner
	mu    sync.Mutex
	// procs maps a running process's pid to its id. Protected by mu.
	procs map[int]string
	// ids maps an id to its process: signals go through its handle (a
	// pidfd), never to a pid that may have been reused. Protected by mu.
	ids map[string]*os.Process
	// reporting is held from a process's start until its "started" is
	// sent. The main process's exit takes it before it ends the init: a
	// process that made the main one exit (an exec that touches the file
	// it waits for) was started, and the agent must hear so, not that
	// the init is gone.
	reporting sync.Mutex
}

func (ci *containerInit) serve() int {
	ci.ids = map[string]*os.Process{}
	r := reaper.New(true)
	// Exits reach the agent in the order they were reaped; the main
	// process's ends the init (and, with it, every process left in the
	// namespace).
	mainDone := make(chan int, 1)
	go func() {
		buf := make([]byte, initproto.MaxInitMsg+1)
		for {
			var m initproto.Msg
			files, err := initproto.RecvBuf(ci.conn, buf, &m)
			if err != nil {
				// The agent is gone: so is the container.
				mainDone <- 137
				return
			}
			switch m.Op {
			case "run":
				ci.run(r, m, files, mainDone)
			case "signal":
				initproto.CloseFiles(files)
				ci.mu.Lock()
				p, ok := ci.ids[m.ID]
				ci.mu.Unlock()
				if ok && m.Signal > 0 && m.Signal <= 64 {
					p.Signal(syscall.Signal(m.Signal))
				}
			default:
				initproto.CloseFiles(files)
			}
		}
	}()
	return <-mainDone
}

func (ci *containerInit) run(r *reaper.Reaper, m initproto.Msg, files []*os.File, mainDone chan<- int) {
	defer initproto.CloseFiles(files)
	ci.reporting.Lock()
	defer ci.reporting.Unlock()
	fail := func(err error) {
		initproto.Send(ci.conn, initproto.Msg{Op: "failed", ID: m.ID, Error: err.Error()})
	}
	if len(files) != 3 || len(m.Args) == 0 {
		fail(errors.New("run needs args and 3 stdio files"))
		return
	}
	path, err := lookPath(m.Args[0], m.Env)
	if err != nil {
		fail(err)
		return
	}
	cwd := m.Cwd
	if cwd == "" {
		cwd = "/"
	}
	attr := &os.ProcAttr{
		Dir:   cwd,
		Env:   m.Env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: m.UID, Gid: m.GID, Groups: m.Groups},
			Setsid:     true,
			Setctty:    m.TTY,
			Ctty:       0,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	pid, ch, err := r.Start(func() (int, error) {
		proc, err := ci.spawn.start(path, m.Args, attr)
		if err != nil {
			return 0, err
		}
		pid := proc.Pid
		// It inherited the init's -1000; the OOM killer must be able to
		// pick it (raising the score needs no privilege).
		os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte("0"), 0)
		ci.mu.Lock()
		ci.procs[pid] = m.ID
		ci.ids[m.ID] = proc
		ci.mu.Unlock()
		return pid, nil
	})
	if err != nil {
		fail(err)
		return
	}
	initproto.Send(ci.conn, initproto.Msg{Op: "started", ID: m.ID, Pid: pid})
	go func() {
		ws := <-ch
		ci.mu.Lock()
		delete(ci.procs, pid)
		if p := ci.ids[m.ID]; p != nil {
			p.Release()
		}
		delete(ci.ids, m.ID)
		ci.mu.Unlock()
		if m.ID == "" {
			// Every start under way has been reported.
			ci.reporting.Lock()
			ci.reporting.Unlock()
		}
		initproto.Send(ci.conn, initproto.Msg{Op: "exited", ID: m.ID, Status: int(ws)})
		if m.ID == "" {
			// The init's own status says how the main process ended too,
			// should its report be lost.
			code := ws.ExitStatus()
			if ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
			mainDone <- code & 0xff
		}
	}()
}

// lookPath finds file in the PATH of env (the container's), as execvp.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q: executable file not found in $PATH", file)
}

// buildRoot makes the container's root filesystem and pivots into it:
// /proc of its own PID namespace, a minimal /dev, /sys read-only, the
// agent's resolv.conf/hosts/hostname, then pivot_root.
func buildRoot(cfg initproto.Config) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	root := cfg.RootFS
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind the rootfs: %w", err)
	}
	in := func(p string) string { return filepath.Join(root, p) }
	type mnt struct {
		src, target, fstype string
		flags               uintptr
		data                string
	}
	nodev := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	for _, d := range []string{"proc", "dev", "sys", "etc", "tmp"} {
		if err := os.MkdirAll(in(d), 0o755); err != nil {
			return fmt.Errorf("create /%s in the rootfs: %w", d, err)
		}
	}
	steps := []mnt{
		{"proc", "proc", "proc", nodev, ""},
		{"tmpfs", "dev", "tmpfs", unix.MS_NOSUID | unix.MS_STRICTATIME, "mode=755,size=65536k"},
	}
	for _, s := range steps {
		if err := unix.Mount(s.src, in(s.target), s.fstype, s.flags, s.data); err != nil {
			return fmt.Errorf("mount /%s: %w", s.target, err)
		}
	}
	if err := guardProc(in("proc")); err != nil {
		return err
	}
	devs := []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}
	for _, d := range devs {
		if err := unix.Mknod(in("dev/"+d.name), unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("mknod /dev/%s: %w", d.name, err)
		}
		// mknod obeys the umask.
		os.Chmod(in("dev/"+d.name), 0o666)
	}
	for _, d := range []string{"dev/pts", "dev/shm"} {
		if err := os.Mkdir(in(d), 0o755); err != nil {
			return err
		}
	}
	// /dev/pts and /dev/shm are the VM's, bound in: the containers of
	// an instance share shared memory (as a pod's do), and a terminal the
	// agent opens for an exec has its name in the container too.
	for _, d := range []string{"dev/pts", "dev/shm"} {
		if err := unix.Mount("/"+d, in(d), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /%s: %w", d, err)
		}
	}
	later := []mnt{
		{"sysfs", "sys", "sysfs", nodev | unix.MS_RDONLY, ""},
	}
	for _, s := range later {
		if err := unix.Mount(s.src, in(s.target), s.fstype, s.flags, s.data); err != nil {
			return fmt.Errorf("mount /%s: %w", s.target, err)
		}
	}
	for link, target := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, in("dev/"+link)); err != nil {
			return err
		}
	}
	for name, src := range cfg.Files {
		if strings.Contains(name, "/") {
			continue
		}
		if err := bindFile(src, root, "etc/"+name); err != nil {
			return err
		}
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	// pivot_root(".", ".") stacks the old root under the new one; the
	// detach then drops it (runc does the same: no directory needed).
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	return unix.Chdir("/")
}

// guardProc makes the kernel's knobs in a container's /proc read-only
// and masks what leaks the guest kernel's memory, as runc's defaults do:
// a container's root is the VM's root, and /proc/sys/kernel/core_pattern
// alone would run its program outside the container.
func guardProc(proc string) error {
	for _, d := range []string{"sys", "sysrq-trigger", "irq", "bus", "fs"} {
		p := filepath.Join(proc, d)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind /proc/%s: %w", d, err)
		}
		if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("make /proc/%s read-only: %w", d, err)
		}
	}
	for _, f := range []string{"kcore", "keys", "timer_list", "sched_debug", "kallsyms"} {
		p := filepath.Join(proc, f)
		if st, err := os.Lstat(p); err != nil || st.IsDir() {
			continue
		}
		if err := unix.Mount(os.DevNull, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mask /proc/%s: %w", f, err)
		}
	}
	return nil
}

// bindFile bind-mounts src read-only over rel inside root. rel's target
// is created through an os.Root, so a symlink in the image cannot point
// the mount outside the rootfs.
func bindFile(src, root, rel string) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer r.Close()
	if st, err := r.Lstat(rel); err == nil && !st.Mode().IsRegular() {
		if err := r.Remove(rel); err != nil {
			return fmt.Errorf("replace /%s: %w", rel, err)
		}
	}
	f, err := r.OpenFile(rel, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("create /%s: %w", rel, err)
	}
	defer f.Close()
	// A detached read-only clone of src, moved onto the file we opened:
	// no path walk that a symlink in the image could redirect.
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("bind /%s: %w", rel, err)
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("make /%s read-only: %w", rel, err)
	}
	if err := unix.MoveMount(tree, "", int(f.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("bind /%s: %w", rel, err)
	}
	return nil
}
