package jail

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Spec is one jailed VMM process.
type Spec struct {
	// Path is the VMM binary's path inside the jail; it must be the Dst
	// of an Exec bind (usually the same as its host path).
	Path string
	// Args are the VMM's arguments (argv[1:]).
	Args []string
	// Root is an empty host directory the jail's tmpfs is mounted on
	// (inside the jail's own mount namespace only).
	Root string
	// Binds are everything the jail holds.
	Binds []Bind
	// UID and GID the VMM runs as (non-zero).
	UID, GID int
	// Groups are supplementary groups, only for device access (the group
	// owning /dev/kvm); none by default.
	Groups []int
	// Rlimits to set; see DefaultRlimits.
	Rlimits []Rlimit
	// ExtraFiles become the VMM's fds 3, 4, ... in order; nothing else
	// beyond stdin/stdout/stderr stays open.
	ExtraFiles []*os.File
	// Stdout and Stderr of the VMM; nil: /dev/null. Stdin is /dev/null.
	Stdout, Stderr io.Writer
	// Cgroup the VMM is put in before it execs; nil: the caller's.
	Cgroup *Cgroup
	// Proc mounts a procfs at /proc that shows the VMM only itself
	// (hidepid=invisible: every VMM has a uid of its own; subset=pid: no
	// /proc/sys, kallsyms or the like). QEMU opens a memory backend by
	// path, and /proc/self/fd/N is the only path to a memfd.
	Proc bool
}

// DefaultRlimits bounds a VMM that writes at most maxFileBytes to any file.
func DefaultRlimits(maxFileBytes uint64) []Rlimit {
	return []Rlimit{
		{Resource: unix.RLIMIT_NOFILE, Cur: 256, Max: 256},
		// Counted per uid, and the uid is the VM's own: QEMU's threads
		// (vCPUs, RCU, a worker pool of at most 64) fit easily.
		{Resource: unix.RLIMIT_NPROC, Cur: 128, Max: 128},
		{Resource: unix.RLIMIT_CORE, Cur: 0, Max: 0},
		{Resource: unix.RLIMIT_FSIZE, Cur: maxFileBytes, Max: maxFileBytes},
		{Resource: unix.RLIMIT_MEMLOCK, Cur: 0, Max: 0},
	}
}

// Start starts the jailed VMM and returns once it has exec'ed the VMM
// binary (or failed to). The returned Cmd is the VMM process: Wait on it.
// On error nothing is left running; the caller still removes Cgroup.
func Start(ctx context.Context, s Spec) (*exec.Cmd, error) {
	hs := helperSpec{
		Path: s.Path, Args: s.Args, Root: s.Root, Binds: s.Binds,
		UID: s.UID, GID: s.GID, Groups: s.Groups, Rlimits: s.Rlimits,
		NFiles: len(s.ExtraFiles), ParentPid: os.Getpid(), Proc: s.Proc,
	}
	if err := hs.validate(); err != nil {
		return nil, err
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer specR.Close()
	defer specW.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer statusR.Close()
	defer statusW.Close()

	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{HelperName},
		Env:        []string{},
		Stdout:     s.Stdout,
		Stderr:     s.Stderr,
		ExtraFiles: append([]*os.File{specR, statusW}, s.ExtraFiles...),
		SysProcAttr: &syscall.SysProcAttr{
			// Its own mount namespace (the jail root) and empty network,
			// IPC and UTS namespaces: the VMM reaches the tap only
			// through the fd it is handed.
			Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
			Pdeathsig:  syscall.SIGKILL,
			Setsid:     true,
		},
	}
	if err := onForkThread(cmd.Start); err != nil {
		return nil, fmt.Errorf("start vmm jail helper: %w", err)
	}
	specR.Close()
	statusW.Close()
	fail := func(err error) (*exec.Cmd, error) {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	// Into the cgroup before it execs, so all the VMM's memory counts.
	if s.Cgroup != nil {
		if err := s.Cgroup.Add(cmd.Process.Pid); err != nil {
			return fail(err)
		}
	}
	b, _ := json.Marshal(hs)
	if _, err := specW.Write(b); err != nil {
		return fail(fmt.Errorf("send jail spec: %w", err))
	}
	specW.Close()
	// The status pipe closes at a successful exec; a failing helper
	// writes its error first.
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	msg, err := io.ReadAll(io.LimitReader(statusR, 4096))
	stopped := !stop()
	if err != nil {
		return fail(fmt.Errorf("read jail status: %w", err))
	}
	if len(msg) > 0 {
		return fail(fmt.Errorf("jail vmm: %s", strings.TrimSpace(string(msg))))
	}
	if stopped {
		return fail(fmt.Errorf("jail vmm: %w", ctx.Err()))
	}
	return cmd, nil
}

// The parent-death signal fires when the *thread* that forked the child
// exits, not the process (golang/go#27505), and the Go runtime retires a
// thread whose goroutine ends while locked to it. So every VMM is forked
// from one goroutine locked to its thread for the life of the process:
// the VMMs die with the process, and only then.
var forker struct {
	once sync.Once
	reqs chan func()
}

func onForkThread(start func() error) error {
	forker.once.Do(func() {
		forker.reqs = make(chan func())
		go forkLoop(forker.reqs)
	})
	errc := make(chan error, 1)
	forker.reqs <- func() { errc <- start() }
	return <-errc
}

func forkLoop(reqs <-chan func()) {
	runtime.LockOSThread() // never unlocked: this thread must not exit
	for f := range reqs {
		f()
	}
}
