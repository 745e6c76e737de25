package kernel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// lockPoll is how often a waiting builder retries the build lock. flock
// cannot be interrupted by a context, so waiting polls it; a build takes
// minutes, so a quarter second of latency is nothing.
const lockPoll = 250 * time.Millisecond

// lock takes the exclusive build lock on path, waiting (PhaseWaiting)
// while another process holds it, until ctx ends.
func (b *Builder) lock(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kernel build lock: %w", err)
	}
	unlock = func() { f.Close() } // closing the fd drops the flock
	waiting := false
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return unlock, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("kernel build lock %s: %w", path, err)
		}
		if !waiting {
			waiting = true
			b.setPhase(PhaseWaiting)
			b.log.Info("another process is building the guest kernel; waiting for it", "lock", path)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("kernel build: waiting for the build lock: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// setProcessGroup puts the script and its make children in a process
// group of their own, killed as a whole when the build is cancelled.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
