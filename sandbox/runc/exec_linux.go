package runc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox"
)

// Exec runs a process in a running container and returns its exit code
// (128+signal when a signal killed it).
//
// It uses `runc exec --detach --pid-file`: runc starts the process and
// exits, the process is reparented to this (subreaper) process, and its exit
// status is reaped with wait4 like a container's init. With a TTY, runc
// sends the pty master over a --console-socket and the process's stdout and
// stderr both arrive on it. Cancelling ctx kills the process.
func (s *runcSandbox) Exec(ctx context.Context, name string, spec sandbox.ExecSpec, stdio sandbox.Stdio) (int, error) {
	c, err := s.container(name)
	if err != nil {
		return -1, err
	}
	if len(spec.Args) == 0 {
		return -1, fmt.Errorf("exec in container %s: no command given: %w", name, errdefs.ErrInvalid)
	}
	s.mu.Lock()
	r := c.cur
	running := c.state.Phase == sandbox.PhaseRunning && r != nil && !r.exited()
	s.mu.Unlock()
	if !running {
		return -1, fmt.Errorf("exec in container %s: container is not running; start it first: %w", name, errdefs.ErrConflict)
	}
	seq := s.runc.seq.Add(1)
	procFile := filepath.Join(c.dir, fmt.Sprintf("exec-%d.json", seq))
	pidFile := filepath.Join(c.dir, fmt.Sprintf("exec-%d.pid", seq))
	defer os.Remove(procFile)
	defer os.Remove(pidFile)
	b, err := json.Marshal(execProcess(c.baseProcess(), spec))
	if err != nil {
		return -1, err
	}
	if err := os.WriteFile(procFile, b, 0o600); err != nil {
		return -1, fmt.Errorf("exec in container %s: %w", name, err)
	}
	args := []string{"exec", "--detach", "--process", procFile, "--pid-file", pidFile}
	var (
		out     *pipes
		console *consoleSocket
	)
	if spec.TTY {
		if console, err = newConsoleSocket(); err != nil {
			return -1, fmt.Errorf("exec in container %s: %w", name, err)
		}
		defer console.Close()
		args = append(args, "--tty", "--console-socket", console.path)
	} else {
		if out, err = newPipes(stdio, false); err != nil {
			return -1, fmt.Errorf("exec in container %s: %w", name, err)
		}
		defer out.finish()
	}
	args = append(args, c.id)
	var child runcStdio
	if out != nil {
		child = out.child()
	}
	err = s.runc.run(ctx, child, args...)
	if out != nil {
		out.closeChildEnds()
	}
	if err != nil {
		return -1, fmt.Errorf("exec in container %s: %w", name, err)
	}
	pid, err := readPid(pidFile)
	if err != nil {
		return -1, fmt.Errorf("exec in container %s: %w", name, err)
	}
	p := &run{pid: pid, pidfd: pidfdOpen(pid), done: make(chan struct{})}
	go func() {
		p.final.ExitCode, p.final.Signal = waitPid(pid, s.log)
		p.markReaped()
		close(p.done)
	}()
	var tty *ttySession
	if console != nil {
		master, err := console.receive(10 * time.Second)
		if err != nil {
			p.kill()
			<-p.done
			return -1, fmt.Errorf("exec in container %s: receive terminal: %w", name, err)
		}
		tty = startTTY(master, stdio, spec.Resize)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.kill()
		<-p.done
	}
	if tty != nil {
		tty.finish()
	}
	if out != nil {
		out.finish()
	}
	if ctx.Err() != nil {
		return p.final.ExitCode, fmt.Errorf("exec in container %s: %w", name, ctx.Err())
	}
	return p.final.ExitCode, nil
}

// consoleSocket is the unix socket runc sends the pty master to.
type consoleSocket struct {
	dir  string
	path string
	ln   *net.UnixListener
}

func newConsoleSocket() (*consoleSocket, error) {
	// sun_path holds 108 bytes; StateDir may be deep, so use a short temp dir.
	dir, err := os.MkdirTemp("", "cube-tty-")
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	path := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return &consoleSocket{dir: dir, path: path, ln: ln}, nil
}

// receive accepts runc's connection and takes the pty master out of its
// SCM_RIGHTS message.
func (cs *consoleSocket) receive(timeout time.Duration) (*os.File, error) {
	cs.ln.SetDeadline(time.Now().Add(timeout))
	conn, err := cs.ln.AcceptUnix()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	var fds []int
	for i := range msgs {
		more, err := unix.ParseUnixRights(&msgs[i])
		if err == nil {
			fds = append(fds, more...)
		}
	}
	if len(fds) == 0 {
		return nil, errors.New("runc sent no file descriptor")
	}
	for _, fd := range fds[1:] {
		unix.Close(fd)
	}
	unix.CloseOnExec(fds[0])
	// Non-blocking, so the runtime poller owns it: reads can be interrupted
	// by a deadline once the process is gone.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	return os.NewFile(uintptr(fds[0]), string(buf[:n])), nil
}

func (cs *consoleSocket) Close() error {
	cs.ln.Close()
	return os.RemoveAll(cs.dir)
}

// ttySession copies between the caller and a pty master.
type ttySession struct {
	master *os.File
	copied sync.WaitGroup
	stop   chan struct{}
}

func startTTY(master *os.File, stdio sandbox.Stdio, resize <-chan sandbox.WindowSize) *ttySession {
	t := &ttySession{master: master, stop: make(chan struct{})}
	if stdio.Stdin != nil {
		go io.Copy(master, stdio.Stdin) // ends on the caller's EOF or a failed write
	}
	dst := stdio.Stdout
	if dst == nil {
		dst = io.Discard
	}
	t.copied.Add(1)
	go func() {
		defer t.copied.Done()
		io.Copy(dst, master) // EIO once every slave end is closed
	}()
	if resize != nil {
		t.copied.Add(1)
		go func() {
			defer t.copied.Done()
			for {
				select {
				case ws, ok := <-resize:
					if !ok {
						return
					}
					setWinsize(master, ws)
				case <-t.stop:
					return
				}
			}
		}()
	}
	return t
}

// setWinsize applies a window size. It goes through SyscallConn because
// File.Fd would switch the file to blocking mode and disable deadlines.
func setWinsize(f *os.File, ws sandbox.WindowSize) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols})
	})
}

// finish drains the output like pipes.finish and closes the master.
func (t *ttySession) finish() {
	close(t.stop)
	done := make(chan struct{})
	go func() {
		t.copied.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(drainTimeout):
		t.master.SetReadDeadline(time.Now())
		<-done
	}
	t.master.Close()
}
