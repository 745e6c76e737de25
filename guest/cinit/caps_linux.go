package cinit

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// containerCaps is the bounding set of container processes: Docker's
// default without CAP_NET_RAW, as the runc backend grants, so an image
// behaves the same on both runtimes, and without CAP_MKNOD: runc's device
// cgroup keeps a node made with it from being opened, and the guest has
// no device cgroup, so a container could otherwise open the VM's drives
// (the writable layer of every container of the instance) or, in the
// moment the agent reopens it, the agent's port. The VM is the boundary
// between tenants; this keeps a container from mounting, loading filters
// or raw-spoofing inside its instance.
var containerCaps = map[uintptr]bool{
	unix.CAP_CHOWN: true, unix.CAP_DAC_OVERRIDE: true, unix.CAP_FSETID: true,
	unix.CAP_FOWNER: true, unix.CAP_SETGID: true,
	unix.CAP_SETUID: true, unix.CAP_SETFCAP: true, unix.CAP_SETPCAP: true,
	unix.CAP_NET_BIND_SERVICE: true, unix.CAP_SYS_CHROOT: true,
	unix.CAP_KILL: true, unix.CAP_AUDIT_WRITE: true,
}

// spawner starts the container's processes from one OS thread whose
// capability bounding set is containerCaps and which has no_new_privs:
// both are per thread and inherited by what it forks, so the init keeps
// its own capabilities (it still kills and reaps) while nothing it starts
// can regain more, not even through a setuid binary of the image.
type spawner struct {
	reqs chan spawnReq
}

type spawnReq struct {
	path string
	args []string
	attr *os.ProcAttr
	done chan spawnResult
}

type spawnResult struct {
	proc *os.Process
	err  error
}

func newSpawner() (*spawner, error) {
	s := &spawner{reqs: make(chan spawnReq)}
	ready := make(chan error, 1)
	go func() {
		// Never unlocked: the thread's bounding set is narrowed for good,
		// and a thread that exits locked is not reused.
		runtime.LockOSThread()
		ready <- narrowThread()
		for r := range s.reqs {
			p, err := os.StartProcess(r.path, r.args, r.attr)
			r.done <- spawnResult{proc: p, err: err}
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return s, nil
}

func narrowThread() error {
	last := lastCap()
	for c := uintptr(0); c <= last; c++ {
		if containerCaps[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}

// lastCap is the highest capability the kernel knows.
func lastCap() uintptr {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		var n int
		if _, err := fmt.Sscanf(string(b), "%d", &n); err == nil && n > 0 && n < 128 {
			return uintptr(n)
		}
	}
	return 40
}

// start runs a process from the narrowed thread.
func (s *spawner) start(path string, args []string, attr *os.ProcAttr) (*os.Process, error) {
	done := make(chan spawnResult, 1)
	s.reqs <- spawnReq{path: path, args: args, attr: attr, done: done}
	r := <-done
	return r.proc, r.err
}
