package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
	"github.com/cube-platform/cube/guest/cinit/initproto"
)

// initReadyTimeout bounds a container init's root building.
const initReadyTimeout = 30 * time.Second

// container is one container Setup declared.
type container struct {
	spec *agentapi.ContainerSpec

	mu sync.Mutex
	// run is the current (or last) run; nil before the first Start.
	// Protected by mu.
	run *containerRun
}

// containerRun is one start of a container: its init, its main process
// and its execs.
type containerRun struct {
	conn *net.UnixConn
	// init is the container init's handle; initPid its pid, for logs.
	init    *os.Process
	initPid int
	cg      cgroup

	mu    sync.Mutex
	main  *process
	execs map[string]*process // protected by mu
	// pending are runs sent to the init awaiting "started" or "failed".
	// Protected by mu.
	pending map[string]chan initMsg
	dead    bool // the init has exited; protected by mu
}

func (r *containerRun) alive() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.dead
}

// startInit clones the container's init into fresh mount, PID, UTS and
// IPC namespaces, puts it in cg, and has it build rootfs.
func (a *Agent) startInit(name string, cg cgroup, cfg initConfig) (*containerRun, <-chan syscall.WaitStatus, error) {
	agentEnd, initEnd, err := initproto.Socketpair()
	if err != nil {
		return nil, nil, err
	}
	defer initEnd.Close()
	conn, err := fileConn(agentEnd)
	if err != nil {
		return nil, nil, err
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	defer devnull.Close()
	// The init gets no environment but GODEBUG (GODEBUG=inittrace=1 on
	// the kernel command line traces the agent and each init). Not nil:
	// StartProcess would pass the agent's own.
	env := []string{}
	if v, ok := os.LookupEnv("GODEBUG"); ok {
		env = append(env, "GODEBUG="+v)
	}
	attr := &os.ProcAttr{
		Env:   env,
		Files: []*os.File{devnull, a.console, a.console, initEnd}, // initEnd is initproto.InitFD
		Sys: &syscall.SysProcAttr{
			// Not CLONE_NEWIPC: the containers of an instance share the
			// VM's IPC namespace, as a pod's do (the VM is the infra).
			Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	// The handle (a pidfd) is kept for signals: the pid alone could name
	// another process once the init is reaped. The reaper, not the
	// handle, waits for it.
	var proc *os.Process
	_, exited, err := a.reaper.Start(func() (int, error) {
		p, err := os.StartProcess(a.cfg.InitBinary, []string{"cube-init:" + name}, attr)
		if err != nil {
			return 0, err
		}
		proc = p
		return p.Pid, nil
	})
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("start the init of container %q: %w", name, err)
	}
	pid := proc.Pid
	fail := func(err error) (*containerRun, <-chan syscall.WaitStatus, error) {
		proc.Signal(unix.SIGKILL)
		<-exited
		proc.Release()
		conn.Close()
		return nil, nil, fmt.Errorf("container %q: %w", name, err)
	}
	// The init waits for its config before it does anything, so it is in
	// the cgroup before the container's first instruction.
	if err := cg.add(pid); err != nil {
		return fail(err)
	}
	if err := sendMsg(conn, cfg); err != nil {
		return fail(fmt.Errorf("send the init its config: %w", err))
	}
	conn.SetReadDeadline(time.Now().Add(initReadyTimeout))
	var m initMsg
	files, err := recvMsg(conn, maxReplyMsg, &m)
	closeFiles(files)
	if err != nil {
		return fail(fmt.Errorf("init did not get ready: %w", err))
	}
	if m.Op != "ready" {
		return fail(fmt.Errorf("init failed: %s", agentSanitize(m.Error)))
	}
	conn.SetReadDeadline(time.Time{})
	return &containerRun{conn: conn, init: proc, initPid: pid, cg: cg, execs: map[string]*process{}, pending: map[string]chan initMsg{}}, exited, nil
}

// agentSanitize bounds an error string from a container init.
func agentSanitize(s string) string {
	if len(s) > 512 {
		s = s[:512]
	}
	return s
}

// listen reads the init's reports until it closes the socket.
func (r *containerRun) listen() {
	for {
		var m initMsg
		files, err := recvMsg(r.conn, maxReplyMsg, &m)
		closeFiles(files)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || err.Error() == "connection closed" || errors.Is(err, syscall.ECONNRESET) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) {
				return
			}
			continue // a malformed report is dropped, not obeyed
		}
		r.mu.Lock()
		switch m.Op {
		case "started", "failed":
			if ch, ok := r.pending[m.ID]; ok {
				if p := r.processLocked(m.ID); p != nil && m.Op == "started" && m.Pid > 0 && m.Pid <= agentapi.MaxPidsLimit {
					p.pid, p.started = m.Pid, time.Now()
				}
				delete(r.pending, m.ID)
				ch <- m
			}
		case "exited":
			if m.ID == "" {
				// The main process: finished once the init is gone,
				// so that the cgroup's OOM count is final.
				if r.main != nil {
					r.main.pendingStatus = syscall.WaitStatus(m.Status)
					r.main.hasStatus = true
				}
			} else if p, ok := r.execs[m.ID]; ok {
				p.finish(syscall.WaitStatus(m.Status), false)
			}
		}
		r.mu.Unlock()
	}
}

// runProcess has the init start p (args etc. in m) and waits for its pid.
func (r *containerRun) runProcess(ctx context.Context, p *process, m initMsg) error {
	ch := make(chan initMsg, 1)
	r.mu.Lock()
	if r.dead {
		r.mu.Unlock()
		return fmt.Errorf("%w: the container is not running", errdefs.ErrConflict)
	}
	if _, dup := r.pending[m.ID]; dup {
		r.mu.Unlock()
		return fmt.Errorf("%w: process %q is already starting", errdefs.ErrConflict, m.ID)
	}
	r.pending[m.ID] = ch
	r.mu.Unlock()
	m.Op = "run"
	err := sendMsg(r.conn, m, p.childFiles...)
	p.releaseChildFiles()
	if err != nil {
		r.dropPending(m.ID)
		return fmt.Errorf("%w: send to the container init: %w", errdefs.ErrUnavailable, err)
	}
	select {
	case rep := <-ch:
		if rep.Op == "failed" {
			return fmt.Errorf("%w: start %v: %s", errdefs.ErrInvalid, m.Args[0], agentSanitize(rep.Error))
		}
		return nil
	case <-ctx.Done():
		r.dropPending(m.ID)
		return fmt.Errorf("%w: start: %w", errdefs.ErrTimeout, ctx.Err())
	}
}

// processLocked finds a process of the run by id ("" is the main one).
// Preconditions: r.mu is held.
func (r *containerRun) processLocked(id string) *process {
	if id == "" {
		return r.main
	}
	return r.execs[id]
}

func (r *containerRun) dropPending(id string) {
	r.mu.Lock()
	delete(r.pending, id)
	r.mu.Unlock()
}

// reaped runs once the init has exited: every process of the run is
// over (the kernel killed what was left of its PID namespace).
func (r *containerRun) reaped(ws syscall.WaitStatus) {
	oom := false
	if n, err := r.cg.oomKills(); err == nil && n > 0 {
		oom = true
	}
	r.mu.Lock()
	r.dead = true
	for id, ch := range r.pending {
		ch <- initMsg{Op: "failed", ID: id, Error: "the container init exited"}
		delete(r.pending, id)
	}
	for _, p := range r.execs {
		p.finish(syscall.WaitStatus(unix.SIGKILL), false)
	}
	if r.main != nil {
		st := ws
		if r.main.hasStatus {
			st = r.main.pendingStatus
		}
		r.main.finish(st, oom)
	}
	r.mu.Unlock()
	r.conn.Close()
	r.init.Release()
}

// abandonOutput lets go of the output of a run a new Start replaced: no
// one can name its processes any more.
func (r *containerRun) abandonOutput() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range append([]*process{r.main}, mapValues(r.execs)...) {
		if p != nil {
			p.stdout.abandon()
			p.stderr.abandon()
		}
	}
}

func mapValues(m map[string]*process) []*process {
	out := make([]*process, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	return out
}

// kill ends the run: SIGKILL to its init (the kernel kills what is left
// of its PID namespace). Killing a run already over is not an error.
func (r *containerRun) kill() error {
	if err := r.init.Signal(unix.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) && r.alive() {
		return err
	}
	return nil
}
