package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
)

// process is a container's main process or an exec, as the agent sees it.
type process struct {
	id  string
	tty bool
	// stdin is the write end of its stdin pipe or its terminal's master
	// (nil without stdin).
	stdin *os.File
	// master is its terminal's master (nil without a TTY), for resizes.
	master         *os.File
	stdout, stderr *output
	// pid and started are set when the init reports the start.
	// Protected by the run's mu.
	pid     int
	started time.Time
	// exit is set once, before done is closed.
	exit *agentapi.WaitResponse
	done chan struct{}
	// pendingStatus is the main process's status as its init reported
	// it, kept until the init is gone (hasStatus says it came).
	// Protected by the run's mu.
	pendingStatus syscall.WaitStatus
	hasStatus     bool
	// childFiles are the process's ends (stdin, stdout, stderr), passed
	// to the container init and then closed here.
	childFiles []*os.File
}

// newProcess makes a process's stdio: pipes, or a terminal (rows x cols).
func newProcess(id string, tty, stdin bool, rows, cols uint16) (*process, error) {
	p := &process{id: id, tty: tty, stdout: newOutput(), stderr: newOutput(), done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			p.closeAll()
		}
	}()
	if tty {
		master, slave, err := openPty()
		if err != nil {
			return nil, err
		}
		p.master = master
		if rows > 0 && cols > 0 {
			setWinsize(master, rows, cols)
		}
		p.childFiles = []*os.File{slave, slave, slave}
		if stdin {
			p.stdin = master
		}
		go p.stdout.pump(dupFile(master))
		p.stderr.closeEmpty()
		ok = true
		return p, nil
	}
	in, err := os.Open(os.DevNull)
	if stdin {
		var w *os.File
		in, w, err = os.Pipe()
		p.stdin = w
	}
	if err != nil {
		return nil, err
	}
	p.childFiles = append(p.childFiles, in)
	for _, o := range []*output{p.stdout, p.stderr} {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.childFiles = append(p.childFiles, w)
		go o.pump(r)
	}
	ok = true
	return p, nil
}

// dupFile gives the pump its own descriptor of f, so that closing one
// (stdin's CloseStdin, the pump's EOF) leaves the other.
func dupFile(f *os.File) *os.File {
	// Through Control, not Fd: Fd would make f blocking and cost it its
	// write deadlines.
	rc, err := f.SyscallConn()
	if err != nil {
		return f
	}
	nfd := -1
	rc.Control(func(fd uintptr) { nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil || nfd < 0 {
		return f
	}
	return os.NewFile(uintptr(nfd), f.Name())
}

// releaseChildFiles closes the agent's copies of the process's ends once
// the init has them: EOF then comes when the process closes its own.
func (p *process) releaseChildFiles() {
	seen := map[*os.File]bool{}
	for _, f := range p.childFiles {
		if !seen[f] {
			f.Close()
			seen[f] = true
		}
	}
	p.childFiles = nil
}

func (p *process) closeAll() {
	p.releaseChildFiles()
	if p.stdin != nil && p.stdin != p.master {
		p.stdin.Close()
	}
	if p.master != nil {
		p.master.Close()
	}
}

// finish records how the process ended (once) and wakes its waiters.
// Preconditions: the run's mu is held.
func (p *process) finish(ws syscall.WaitStatus, oom bool) {
	select {
	case <-p.done:
		return
	default:
	}
	r := &agentapi.WaitResponse{FinishedUnixNano: time.Now().UnixNano(), OomKilled: oom}
	if !p.started.IsZero() {
		r.StartedUnixNano = p.started.UnixNano()
	}
	switch {
	case ws.Exited():
		r.ExitCode = int32(ws.ExitStatus() & 0xff)
	case ws.Signaled() && ws.Signal() > 0 && ws.Signal() <= 64:
		r.Signal = int32(ws.Signal())
		r.ExitCode = 128 + r.Signal
	default:
		r.ExitCode = 255
	}
	p.exit = r
	if p.stdin != nil && p.stdin != p.master {
		p.stdin.Close()
	}
	if p.master != nil {
		// The pump reads its own duplicate until the terminal drains.
		p.master.Close()
	}
	close(p.done)
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *process) wait(ctx context.Context) (*agentapi.WaitResponse, error) {
	select {
	case <-p.done:
		return p.exit, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: wait: %w", errdefs.ErrTimeout, ctx.Err())
	}
}

// writeStdin writes b, waiting at most until ctx's deadline for the
// process to read.
func (p *process) writeStdin(ctx context.Context, b []byte) (int, error) {
	if p.stdin == nil {
		return 0, fmt.Errorf("%w: process %q has no stdin (start it with stdin)", errdefs.ErrConflict, p.id)
	}
	if dl, ok := ctx.Deadline(); ok {
		p.stdin.SetWriteDeadline(dl)
	}
	n, err := p.stdin.Write(b)
	if n == 0 && err != nil {
		return 0, fmt.Errorf("%w: write stdin: %w", errdefs.ErrConflict, err)
	}
	return n, nil
}

func (p *process) closeStdin() error {
	if p.stdin == nil {
		return nil
	}
	if p.tty {
		// A terminal has no half-close: send EOF (^D) as a typing user.
		_, err := p.stdin.Write([]byte{4})
		return err
	}
	// The process may have exited (and its stdin been closed) already.
	if err := p.stdin.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

func openPty() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	rc, err := m.SyscallConn()
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	sfd := -1
	rc.Control(func(fd uintptr) {
		if err = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); err != nil {
			err = fmt.Errorf("unlock pty: %w", err)
			return
		}
		// TIOCGPTPEER opens the slave through the master: no path lookup.
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
		if errno != 0 {
			err = errno
			return
		}
		sfd = int(r)
	})
	if err != nil || sfd < 0 {
		m.Close()
		return nil, nil, fmt.Errorf("open pty slave: %w", err)
	}
	return m, os.NewFile(uintptr(sfd), "pty-slave"), nil
}

func setWinsize(f *os.File, rows, cols uint16) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	rc.Control(func(fd uintptr) {
		err = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
	return err
}
