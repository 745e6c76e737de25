package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox"
)

// drainTimeout bounds how long output is still copied after a process
// exited: a background child may hold its stdout open for ever.
const drainTimeout = 2 * time.Second

// container is one runc container of the sandbox.
type container struct {
	spec   sandbox.ContainerSpec
	id     string // runc container id
	dir    string // bundle: config.json, rootfs (overlay), upper, work
	cgroup string // cgroups path, the same in every hierarchy
	// process is the container's OCI process, the base of every exec. Set by
	// Create before the sandbox is marked created, read-only afterwards.
	process *specs.Process

	// opMu serializes Start, Stop and kill of this container.
	opMu sync.Mutex

	state   sandbox.ContainerState // protected by runcSandbox.mu
	defined bool                   // runc holds a container under id; protected by runcSandbox.mu
	cur     *run                   // the latest run, nil before the first Start; protected by runcSandbox.mu
	// pre is the run Create made ahead of the first Start (see precreate),
	// with the pipes its output waits in; nil once Start took it or it was
	// killed; protected by runcSandbox.mu.
	pre    *run
	preOut *pipes
}

// run is one life of a container's init process.
type run struct {
	pid   int
	done  chan struct{}          // closed once the init was reaped and its output drained
	final sandbox.ContainerState // valid after done is closed

	mu     sync.Mutex
	pidfd  int  // signals pid without racing pid reuse; -1 when unavailable; protected by mu
	reaped bool // pid was reaped and may be reused; protected by mu
}

func (r *run) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Start runs the container's init (again, after it exited: the old runc
// container is deleted and a new one created on the same overlay, so the
// writable layer survives restarts). If runc cannot start the command, the
// container is reported exited with 127 (not found), 126 (not executable) or
// 128 (other), Start returns the error, and Wait returns that state at once.
//
// The first Start of a container usually finds it created by Create
// already (see precreate) and only runs `runc start`.
func (s *runcSandbox) Start(ctx context.Context, name string, stdio sandbox.Stdio) error {
	c, err := s.container(name)
	if err != nil {
		return err
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	s.mu.Lock()
	created, cur := s.created, c.cur
	s.mu.Unlock()
	if !created {
		return fmt.Errorf("container %s: sandbox %s is not created (call Create first) or was destroyed: %w", name, s.spec.ID, errdefs.ErrConflict)
	}
	if cur != nil && !cur.exited() {
		return fmt.Errorf("container %s is already running (pid %d): %w", name, cur.pid, errdefs.ErrConflict)
	}
	if r, out := s.takePrecreated(c); r != nil {
		if stdio.Stdin == nil && !r.exited() {
			out.attach(stdio, true)
			s.promote(c, r)
			return s.startCreated(ctx, c, r)
		}
		// It died, or the caller wants a stdin it was not made with: a
		// fresh run replaces it.
		r.kill()
		<-r.done
	}
	if err := s.deleteDefined(ctx, c); err != nil {
		return fmt.Errorf("container %s: delete previous run: %w", name, err)
	}
	out, err := newPipes(stdio, true)
	if err != nil {
		return fmt.Errorf("container %s: %w", name, err)
	}
	r, err := s.create(ctx, c, out)
	if err != nil {
		out.finish()
		var re *runcError
		if errors.As(err, &re) {
			now := time.Now()
			r := &run{pidfd: -1, done: make(chan struct{})}
			r.final = sandbox.ContainerState{Name: name, Phase: sandbox.PhaseExited, ExitCode: exitCodeForStartError(runcMessage(err)), StartedAt: now, FinishedAt: now}
			close(r.done)
			s.mu.Lock()
			c.cur, c.state = r, r.final
			s.mu.Unlock()
			return fmt.Errorf("container %s: start: %w", name, err)
		}
		return fmt.Errorf("container %s: %w", name, err)
	}
	s.promote(c, r)
	return s.startCreated(ctx, c, r)
}

// deleteDefined deletes the runc container of an earlier run, if runc
// holds one. Preconditions: c.opMu held.
func (s *runcSandbox) deleteDefined(ctx context.Context, c *container) error {
	s.mu.Lock()
	defined := c.defined
	s.mu.Unlock()
	if !defined {
		return nil
	}
	if err := s.runc.run(ctx, runcStdio{}, "delete", "--force", c.id); err != nil && !notExist(err) {
		return err
	}
	s.mu.Lock()
	c.defined = false
	s.mu.Unlock()
	return nil
}

// create runs `runc create` for c, whose runc container must be deleted,
// with out's child ends as the init's stdio, and returns the run: its init
// waits for `runc start` to exec the command, and a goroutine reaps it and
// then finishes out. A failure of runc itself is a *runcError; on any error
// the caller still owns out. Preconditions: c.opMu held.
func (s *runcSandbox) create(ctx context.Context, c *container, out *pipes) (*run, error) {
	pidFile := filepath.Join(c.dir, "init.pid")
	os.Remove(pidFile)
	err := s.runc.run(ctx, out.child(), "create", "--bundle", c.dir, "--pid-file", pidFile, c.id)
	out.closeChildEnds()
	s.mu.Lock()
	c.defined = true // even a failed create may leave a stopped container behind
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	pid, err := readPid(pidFile)
	if err != nil {
		return nil, err
	}
	r := &run{pid: pid, pidfd: pidfdOpen(pid), done: make(chan struct{})}
	go s.reap(c, r, out)
	return r, nil
}

// promote makes r the container's current run, started now (or, if its
// init already died, ended). Preconditions: c.opMu held.
func (s *runcSandbox) promote(c *container, r *run) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.cur = r
	if r.exited() {
		c.state = r.final
		return
	}
	c.state = sandbox.ContainerState{Name: c.spec.Name, Phase: sandbox.PhaseRunning, Pid: r.pid, StartedAt: time.Now()}
}

// startCreated caps the created run's CPU and lets its init exec the
// command (`runc start`). On failure the run is killed and reaped.
// Preconditions: c.opMu held.
func (s *runcSandbox) startCreated(ctx context.Context, c *container, r *run) error {
	// The init waits for `runc start` to exec the command: cap it now (see
	// cpuQuota for why this is not in config.json).
	if quota := cpuQuota(c.spec); quota > 0 {
		if err := setCPUQuota(c.cgroup, quota, cpuPeriod); err != nil {
			r.kill()
			<-r.done
			return fmt.Errorf("container %s: start: %w", c.spec.Name, err)
		}
	}
	if err := s.runc.run(ctx, runcStdio{}, "start", c.id); err != nil {
		r.kill()
		<-r.done
		return fmt.Errorf("container %s: start: %w", c.spec.Name, err)
	}
	s.log.Info("container started", "container", c.spec.Name, "pid", r.pid)
	return nil
}

// reap waits for the container's init to exit, records how it ended and
// whether the OOM killer struck in its cgroup (read before anything deletes
// the cgroup: runc keeps it until `runc delete`, which only Start and
// Destroy call, after this). The container's state changes only if r is its
// current run (not one created ahead and never started).
func (s *runcSandbox) reap(c *container, r *run, out *pipes) {
	code, sig := waitPid(r.pid, s.log)
	finished := time.Now()
	r.markReaped()
	oom := false
	if n, err := oomKills(c.cgroup); err != nil {
		s.log.Warn("cannot read oom kill count", "container", c.spec.Name, "err", err)
	} else {
		oom = n > 0
	}
	out.finish()
	s.mu.Lock()
	st := sandbox.ContainerState{Name: c.spec.Name, StartedAt: finished}
	if c.cur == r {
		st = c.state
	}
	st.Phase, st.Pid, st.ExitCode, st.Signal, st.OOMKilled, st.FinishedAt = sandbox.PhaseExited, 0, code, sig, oom, finished
	r.final = st
	if c.cur == r {
		c.state = st
	}
	close(r.done)
	s.mu.Unlock()
	s.log.Info("container exited", "container", c.spec.Name, "exit_code", code, "signal", sig, "oom_killed", oom)
}

// kill sends SIGKILL to the run's process, by pidfd when there is one so a
// reused pid is never hit.
func (r *run) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.reaped || r.pid <= 0:
	case r.pidfd >= 0:
		unix.PidfdSendSignal(r.pidfd, unix.SIGKILL, nil, 0)
	default:
		unix.Kill(r.pid, unix.SIGKILL)
	}
}

// markReaped is called once the pid is reaped: from then on the pid may
// belong to someone else.
func (r *run) markReaped() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pidfd >= 0 {
		unix.Close(r.pidfd)
	}
	r.pidfd, r.reaped = -1, true
}

// waitPid reaps pid, our (adopted) child, and returns its exit code: the
// exit status, or 128+signal with the signal when a signal killed it.
func waitPid(pid int, log interface{ Error(string, ...any) }) (code, sig int) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ECHILD):
			// Not our child: someone else reaps it and keeps the status.
			log.Error("process is not our child; its exit status is lost (is this process a child subreaper?)", "pid", pid)
			for unix.Kill(pid, 0) == nil {
				time.Sleep(100 * time.Millisecond)
			}
			return 255, 0
		case err != nil:
			log.Error("wait for process", "pid", pid, "err", err)
			return 255, 0
		case ws.Exited():
			return ws.ExitStatus(), 0
		case ws.Signaled():
			return 128 + int(ws.Signal()), int(ws.Signal())
		}
	}
}

func pidfdOpen(pid int) int {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1
	}
	unix.CloseOnExec(fd)
	return fd
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read runc pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("runc pid file %s holds %q, not a pid", path, b)
	}
	return pid, nil
}

// Wait blocks until the container's current run ends.
func (s *runcSandbox) Wait(ctx context.Context, name string) (sandbox.ContainerState, error) {
	c, err := s.container(name)
	if err != nil {
		return sandbox.ContainerState{}, err
	}
	s.mu.Lock()
	r := c.cur
	s.mu.Unlock()
	if r == nil {
		return sandbox.ContainerState{}, fmt.Errorf("container %s has never been started; call Start first: %w", name, errdefs.ErrConflict)
	}
	select {
	case <-r.done:
		return r.final, nil
	case <-ctx.Done():
		return sandbox.ContainerState{}, fmt.Errorf("wait for container %s: %w", name, ctx.Err())
	}
}

// Stop sends SIGTERM, then SIGKILL after grace, and waits for the exit. A
// container that is not running is left alone, except that one created
// ahead of its first Start is killed: it will not start now.
func (s *runcSandbox) Stop(ctx context.Context, name string, grace time.Duration) error {
	c, err := s.container(name)
	if err != nil {
		return err
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if err := s.killPrecreated(ctx, c); err != nil {
		return err
	}
	s.mu.Lock()
	r := c.cur
	s.mu.Unlock()
	if r == nil || r.exited() {
		return nil
	}
	if err := s.runc.run(ctx, runcStdio{}, "kill", c.id, "TERM"); err != nil && !r.exited() {
		s.log.Warn("runc kill TERM failed", "container", name, "err", err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop container %s: %w", name, ctx.Err())
	case <-t.C:
	}
	return s.killRun(ctx, c, r)
}

// kill SIGKILLs the container's current run, if any, and waits for it.
func (s *runcSandbox) kill(ctx context.Context, c *container) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if err := s.killPrecreated(ctx, c); err != nil {
		return err
	}
	s.mu.Lock()
	r := c.cur
	s.mu.Unlock()
	if r == nil || r.exited() {
		return nil
	}
	return s.killRun(ctx, c, r)
}

// killRun: SIGKILL to the init kills the whole PID namespace, so neither
// --all nor a freezer is needed. Preconditions: c.opMu held.
func (s *runcSandbox) killRun(ctx context.Context, c *container, r *run) error {
	if err := s.runc.run(ctx, runcStdio{}, "kill", c.id, "KILL"); err != nil && !r.exited() {
		s.log.Warn("runc kill KILL failed; signalling the pid", "container", c.spec.Name, "err", err)
		r.kill()
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kill container %s: %w", c.spec.Name, ctx.Err())
	}
}

// State reports every container in spec order.
func (s *runcSandbox) State(ctx context.Context) ([]sandbox.ContainerState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]sandbox.ContainerState, 0, len(s.order))
	for _, name := range s.order {
		out = append(out, s.byName[name].state)
	}
	return out, nil
}
