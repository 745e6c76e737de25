package jail

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Fds of the helper: the spec pipe, the status pipe, then the VMM's files.
const (
	specFd   = 3
	statusFd = 4
	firstFd  = 5
)

func init() {
	if len(os.Args) == 0 || os.Args[0] != HelperName {
		return
	}
	// Capabilities, no_new_privs and the parent-death signal belong to a
	// thread; everything below and the final execve run on this one.
	runtime.LockOSThread()
	err := helperMain()
	// Reached only on failure: tell the parent why, then die.
	unix.Write(statusOut, []byte(err.Error()))
	fmt.Fprintf(os.Stderr, "%s: %v\n", HelperName, err)
	os.Exit(126)
}

func helperMain() error {
	if _, err := unix.FcntlInt(statusFd, unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return fmt.Errorf("status pipe: %w", err)
	}
	specFile := os.NewFile(specFd, "spec")
	b, err := io.ReadAll(io.LimitReader(specFile, 1<<20))
	specFile.Close()
	if err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	var s helperSpec
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("decode spec: %w", err)
	}
	if err := s.validate(); err != nil {
		return err
	}
	if err := setupMounts(&s); err != nil {
		return err
	}
	for _, r := range s.Rlimits {
		if err := unix.Setrlimit(r.Resource, &unix.Rlimit{Cur: r.Cur, Max: r.Max}); err != nil {
			return fmt.Errorf("setrlimit %d: %w", r.Resource, err)
		}
	}
	if err := moveFiles(s.NFiles); err != nil {
		return err
	}
	if err := dropPrivileges(&s); err != nil {
		return err
	}
	// Every other descriptor (the Go runtime's) closes at exec.
	if err := unix.CloseRange(uint(3+s.NFiles), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close_range: %w", err)
	}
	argv := append([]string{filepath.Base(s.Path)}, s.Args...)
	err = unix.Exec(s.Path, argv, []string{})
	return fmt.Errorf("exec %s: %w", s.Path, err)
}

// setupMounts builds the jail root, a tmpfs on s.Root, binds every file
// into it, pivots into it and makes it read-only. The helper already runs
// in its own mount namespace (CLONE_NEWNS), so nothing here is visible to
// the host and everything vanishes with the process.
func setupMounts(s *helperSpec) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("cube-jail", s.Root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=64k,nr_inodes=512,mode=0755"); err != nil {
		return fmt.Errorf("mount jail tmpfs on %s: %w", s.Root, err)
	}
	for _, b := range s.Binds {
		if err := bind(s.Root, b); err != nil {
			return err
		}
	}
	if s.Proc {
		dst := filepath.Join(s.Root, "proc")
		if err := os.Mkdir(dst, 0o555); err != nil {
			return fmt.Errorf("proc mount point: %w", err)
		}
		if err := unix.Mount("proc", dst, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RDONLY, "hidepid=invisible,subset=pid"); err != nil {
			return fmt.Errorf("mount the vmm's proc: %w", err)
		}
	}
	if err := unix.Chdir(s.Root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root into %s: %w", s.Root, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("make the jail root read-only: %w", err)
	}
	return nil
}

func bind(root string, b Bind) error {
	dst := filepath.Join(root, b.Dst)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	st, err := os.Stat(b.Src)
	if err != nil {
		return fmt.Errorf("bind %s: %w", b.Src, err)
	}
	if st.IsDir() {
		err = os.Mkdir(dst, 0o755)
	} else {
		var f *os.File
		f, err = os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			f.Close()
		}
	}
	if err != nil && !os.IsExist(err) {
		return fmt.Errorf("bind %s: mount point: %w", b.Dst, err)
	}
	if err := unix.Mount(b.Src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", b.Src, b.Dst, err)
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID)
	if !b.Writable {
		flags |= unix.MS_RDONLY
	}
	if !b.Exec {
		flags |= unix.MS_NOEXEC
	}
	if !b.Dev {
		flags |= unix.MS_NODEV
	}
	if err := unix.Mount("", dst, "", flags, ""); err != nil {
		return fmt.Errorf("restrict bind %s: %w", b.Dst, err)
	}
	return nil
}

// moveFiles renumbers the VMM's files from firstFd.. down to 3.., so the
// VMM sees exactly fds 0-2 and 3..3+n-1.
func moveFiles(n int) error {
	// The status pipe (fd 4) is in the way: move it above the range.
	hi, err := unix.FcntlInt(statusFd, unix.F_DUPFD_CLOEXEC, firstFd+n+1)
	if err != nil {
		return fmt.Errorf("move status pipe: %w", err)
	}
	unix.Close(statusFd)
	for i := 0; i < n; i++ {
		if err := unix.Dup3(firstFd+i, 3+i, 0); err != nil {
			return fmt.Errorf("move fd %d: %w", firstFd+i, err)
		}
	}
	for fd := max(3+n, firstFd); fd < firstFd+n; fd++ {
		unix.Close(fd)
	}
	// fd 4 may now be a VMM file; the status pipe lives on at hi
	// (close-on-exec). Raw fds, not *os.File: a finalizer must never
	// close a number that was reused.
	statusOut = hi
	return nil
}

// statusOut is the fd of the status pipe's write end.
var statusOut = statusFd

// dropPrivileges switches to the jail's uid and gid with no groups and no
// capabilities in any set, sets no_new_privs and re-arms the parent-death
// signal (a credential change clears it).
func dropPrivileges(s *helperSpec) error {
	last, err := lastCap()
	if err != nil {
		return err
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if err := syscall.Setgroups(s.Groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(s.GID, s.GID, s.GID); err != nil {
		return fmt.Errorf("setresgid %d: %w", s.GID, err)
	}
	if err := syscall.Setresuid(s.UID, s.UID, s.UID); err != nil {
		return fmt.Errorf("setresuid %d: %w", s.UID, err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clear capabilities: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent-death signal: %w", err)
	}
	if os.Getppid() != s.ParentPid {
		return fmt.Errorf("parent %d is gone", s.ParentPid)
	}
	return nil
}

// lastCap is the highest capability number, read before pivot_root (the
// jail has no /proc).
func lastCap() (int, error) {
	if capLast >= 0 {
		return capLast, nil
	}
	return 0, fmt.Errorf("cap_last_cap unknown")
}

var capLast = func() int {
	if len(os.Args) == 0 || os.Args[0] != HelperName {
		return -1
	}
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}()
