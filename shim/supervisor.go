package shim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cube-platform/cube/internal/logfile"
	"github.com/cube-platform/cube/sandbox"
)

// Restart back-off: the first restart waits minBackoff, each next one twice
// as long up to maxBackoff; a run of at least resetBackoff starts over.
const (
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 10 * time.Second
	resetBackoff = 10 * time.Second
)

// supervisor owns one sandbox and its containers for the life of the shim.
type supervisor struct {
	cfg Config
	sb  sandbox.Sandbox
	log *slog.Logger
	ctx context.Context // the shim's life: cancelled when it exits

	containers []*supervised
	startCh    chan struct{} // closed when the containers may start (see Config.AwaitStart)
	startOnce  sync.Once
	iface      *sandbox.Interface // to connect before the first start; written before startCh is closed
	stopCh     chan struct{}      // closed by stop: no more starts
	booted     chan struct{}      // closed when every first start was attempted (or skipped)
	running    sync.WaitGroup

	mu        sync.Mutex
	version   uint64        // protected by mu
	changed   chan struct{} // closed and replaced on every change; protected by mu
	createErr string        // protected by mu
	stopped   bool          // protected by mu
	// suspended: the sandbox is saved and runs nothing (see suspend.go);
	// loaded: this shim found it so at Create and supervises no
	// container yet; resumed is closed at the next resume.
	suspended   bool          // protected by mu
	loaded      bool          // protected by mu
	resumed     chan struct{} // protected by mu
	suspendedAt time.Time     // protected by mu
	resumedAt   time.Time     // protected by mu
	// failReason and failMessage tell why the last suspend or resume
	// failed, until one succeeds.
	failReason, failMessage string // protected by mu
	failures                int    // in a row; protected by mu

	// transitionMu serializes suspend, resume and stop.
	transitionMu sync.Mutex

	// shutdownMu serializes shutdowns; a failed one may be retried.
	shutdownMu sync.Mutex
	exited     chan struct{} // closed once a shutdown succeeded
}

// supervised is one container under supervision.
type supervised struct {
	name string
	logs *logfile.Writer
	// startMu is held across a Start, so that stop, which takes it once
	// after setting stopped, never misses a container being started.
	startMu sync.Mutex
	status  ContainerStatus // protected by supervisor.mu
	// ended: it ended for good under a shim this one replaced (see
	// Config.Exited), so boot never starts it.
	ended bool
}

func newSupervisor(ctx context.Context, cfg Config, sb sandbox.Sandbox, log *slog.Logger) (*supervisor, error) {
	s := &supervisor{
		cfg: cfg, sb: sb, log: log, ctx: ctx,
		startCh: make(chan struct{}), stopCh: make(chan struct{}), booted: make(chan struct{}),
		version: 1, changed: make(chan struct{}), exited: make(chan struct{}),
	}
	if !cfg.AwaitStart {
		s.start()
	}
	for _, c := range cfg.Sandbox.Containers {
		w, err := logfile.NewWriter(filepath.Join(cfg.LogDir, c.Name+".log"), logfile.Options{MaxBytes: cfg.LogMaxBytes, MaxFiles: cfg.LogMaxFiles})
		if err != nil {
			s.closeLogs()
			return nil, err
		}
		sc := &supervised{name: c.Name, logs: w, status: ContainerStatus{
			ContainerState: sandbox.ContainerState{Name: c.Name, Phase: sandbox.PhaseCreated},
			Reason:         ReasonContainerCreating,
			RestartCount:   cfg.RestartCounts[c.Name],
		}}
		if st, ok := cfg.Exited[c.Name]; ok {
			st.Name, st.Phase, st.Pid = c.Name, sandbox.PhaseExited, 0
			sc.status.ContainerState, sc.status.Reason, sc.ended = st, terminationReason(st, false), true
			sc.endLogs(log)
		}
		s.containers = append(s.containers, sc)
	}
	return s, nil
}

// update runs fn under mu and publishes a new state version.
func (s *supervisor) update(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
	s.version++
	close(s.changed)
	s.changed = make(chan struct{})
}

// snapshot returns the current state and a channel closed at its next change.
func (s *supervisor) snapshot() (State, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := make([]ContainerStatus, len(s.containers))
	for i, c := range s.containers {
		cs[i] = c.status
	}
	phase, reason, msg := derivePhase(s.createErr, s.stopped, cs)
	st := State{Version: s.version, Containers: cs, ResumedAt: s.resumedAt}
	if s.suspended && s.createErr == "" {
		phase, reason, msg = PhaseSuspended, "", ""
		st.SuspendedAt = s.suspendedAt
	}
	if s.failReason != "" && (phase == PhaseRunning || phase == PhaseSuspended) {
		reason, msg = s.failReason, s.failMessage
	}
	st.Phase, st.Reason, st.Message = phase, reason, msg
	return st, s.changed
}

func (s *supervisor) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// start lets boot start the containers; only the first call counts.
func (s *supervisor) start() {
	s.startWith(nil)
}

// startWith is start with the interface to connect first (nil: none).
func (s *supervisor) startWith(iface *sandbox.Interface) {
	s.startOnce.Do(func() {
		s.iface = iface
		close(s.startCh)
	})
}

// boot creates the sandbox and, once start was called, starts the
// containers in order, each under its own supervising goroutine.
func (s *supervisor) boot() {
	defer close(s.booted)
	if err := s.sb.Create(s.ctx); err != nil {
		s.log.Error("create sandbox", "err", err)
		s.endAllLogs()
		s.update(func() { s.createErr = err.Error() })
		return
	}
	if sus, ok := s.sb.(sandbox.Suspender); ok && sus.Suspended() {
		// A shim before this one suspended it: nothing starts, and a
		// start the node asks for changes nothing; resume adopts.
		if err := s.load(s.ctx); err != nil {
			s.log.Error("load suspended sandbox", "err", err)
			s.endAllLogs()
			s.update(func() { s.createErr = err.Error() })
		}
		return
	}
	select {
	case <-s.startCh:
	case <-s.stopCh:
		s.endAllLogs()
		return
	}
	if s.iface != nil {
		if err := s.sb.Connect(s.ctx, *s.iface); err != nil {
			s.log.Error("connect sandbox to its network", "err", err)
			s.endAllLogs()
			s.update(func() { s.createErr = "connect network: " + err.Error() })
			return
		}
	}
	for i, c := range s.containers {
		if s.isStopped() {
			for _, rest := range s.containers[i:] {
				rest.endLogs(s.log) // they never run
			}
			return
		}
		if c.ended {
			continue
		}
		first := make(chan struct{})
		s.running.Add(1)
		go s.supervise(c, first, nil)
		<-first
	}
}

// supervise runs one container until the restart policy or stop says no
// more. from, if set, is a container a resume handed back: its first run
// is adopted (or its exit judged), not started.
func (s *supervisor) supervise(c *supervised, first chan struct{}, from *adoption) {
	defer s.running.Done()
	backoff := minBackoff
	for {
		var st sandbox.ContainerState
		var startErr string
		ok := true
		switch {
		case from != nil && from.exited != nil:
			st = *from.exited
		case from != nil && from.stdout != nil:
			st = s.adoptOnce(c, from)
		default:
			st, startErr, ok = s.runOnce(c, func() {
				if first != nil {
					close(first)
					first = nil
				}
			})
		}
		from = nil
		if !ok {
			c.endLogs(s.log)
			return
		}
		if st.FinishedAt.Sub(st.StartedAt) >= resetBackoff {
			backoff = minBackoff
		}
		reason := terminationReason(st, startErr != "")
		s.mu.Lock()
		restarts := c.status.RestartCount
		s.mu.Unlock()
		restart := !s.isStopped() && RestartsAgain(s.cfg.RestartPolicy, st.ExitCode, restarts, s.cfg.MaxRestarts)
		s.log.Info("container exited", "container", c.name, "exit_code", st.ExitCode, "reason", reason, "restart", restart)
		if !restart {
			// Before the exit is published: whoever sees the final
			// state finds the log complete, so a follower ends.
			c.endLogs(s.log)
		}
		s.update(func() {
			c.status.ContainerState = st
			c.status.Reason, c.status.Message, c.status.WillRestart = reason, startErr, restart
			if restart {
				c.status.Reason = ReasonCrashLoopBackOff
				c.status.Message = fmt.Sprintf("back-off %s restarting container %s (last exit code %d, %s)", backoff, c.name, st.ExitCode, reason)
				// Why it ended (VMMExited, OOMKilled…) stays readable
				// while the reason says it waits to restart.
				c.status.LastExit = &Exit{ExitCode: st.ExitCode, Signal: st.Signal, OOMKilled: st.OOMKilled, Reason: reason, FinishedAt: st.FinishedAt}
			}
		})
		if !restart {
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-s.stopCh:
			t.Stop()
			c.endLogs(s.log)
			s.update(func() {
				c.status.Reason, c.status.Message, c.status.WillRestart = reason, startErr, false
			})
			return
		}
		backoff = min(2*backoff, maxBackoff)
		s.update(func() {
			c.status.RestartCount++
			c.status.LastExit = &Exit{ExitCode: st.ExitCode, Signal: st.Signal, OOMKilled: st.OOMKilled, Reason: reason, FinishedAt: st.FinishedAt}
		})
	}
}

// runOnce starts the container and waits for it to end. It reports ok=false
// when stop came first. started is called once the start was attempted.
func (s *supervisor) runOnce(c *supervised, started func()) (st sandbox.ContainerState, startErr string, ok bool) {
	if err := c.logs.Resume(); err != nil {
		s.log.Warn("reopen container log", "container", c.name, "err", err)
	}
	stdout, stderr := c.logs.Stream(logfile.Stdout), c.logs.Stream(logfile.Stderr)
	// Closed when the run ended (its output drained): before the caller
	// may end the log.
	defer stdout.Close()
	defer stderr.Close()
	for {
		c.startMu.Lock()
		if s.isStopped() {
			c.startMu.Unlock()
			started()
			return st, "", false
		}
		resumed := s.resumedIfSuspended()
		if resumed == nil {
			break
		}
		// A restart due while the sandbox is suspended waits for the resume.
		c.startMu.Unlock()
		select {
		case <-resumed:
		case <-s.stopCh:
		}
	}
	err := s.sb.Start(s.ctx, c.name, sandbox.Stdio{Stdout: stdout, Stderr: stderr})
	if err == nil {
		states, _ := s.sb.State(s.ctx)
		s.update(func() {
			// Running until Wait says otherwise, even if it already exited:
			// the exit is published only with its restart decision, so a
			// watcher never sees a final phase that is not.
			c.status.ContainerState = sandbox.ContainerState{Name: c.name, Phase: sandbox.PhaseRunning, StartedAt: time.Now()}
			for _, cs := range states {
				if cs.Name == c.name {
					c.status.Pid, c.status.StartedAt = cs.Pid, cs.StartedAt
				}
			}
			c.status.Reason, c.status.Message, c.status.WillRestart = "", "", false
		})
	}
	c.startMu.Unlock()
	started()
	if err != nil {
		s.log.Warn("start container", "container", c.name, "err", err)
		startErr = err.Error()
	}
	st, werr := s.sb.Wait(s.ctx, c.name)
	if werr != nil {
		// Start failed before the backend recorded a run.
		if startErr == "" {
			startErr = werr.Error()
		}
		now := time.Now()
		st = sandbox.ContainerState{Name: c.name, Phase: sandbox.PhaseExited, ExitCode: 128, StartedAt: now, FinishedAt: now}
	}
	return st, startErr, true
}

// stop stops every container with grace and disables restarts for good.
// A suspended sandbox has no process to stop: its containers stay as they
// were saved until Destroy.
func (s *supervisor) stop(ctx context.Context, grace time.Duration) error {
	s.transitionMu.Lock()
	defer s.transitionMu.Unlock()
	s.update(func() {
		if !s.stopped {
			s.stopped = true
			close(s.stopCh)
		}
	})
	if s.isSuspended() {
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, len(s.containers))
	for i, c := range s.containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.startMu.Lock() // a Start in flight finishes first; none begins after
			c.startMu.Unlock()
			errs[i] = s.sb.Stop(ctx, c.name, grace)
		}()
	}
	wg.Wait()
	select {
	case <-s.booted:
	case <-ctx.Done():
		return fmt.Errorf("stop: sandbox still being created: %w", ctx.Err())
	}
	done := make(chan struct{})
	go func() {
		s.running.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("stop: containers still exiting: %w", ctx.Err())
	}
	return errors.Join(errs...)
}

// shutdown stops everything, destroys the sandbox and removes the shim's
// socket, pid and config files (not the container logs). After it
// succeeded, exited is closed and the shim process ends.
func (s *supervisor) shutdown(ctx context.Context, grace time.Duration) error {
	s.shutdownMu.Lock()
	defer s.shutdownMu.Unlock()
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.stop(ctx, grace); err != nil {
		s.log.Warn("stop before shutdown", "err", err)
	}
	if err := s.sb.Destroy(ctx); err != nil {
		return fmt.Errorf("shutdown: %w (retry the shutdown)", err)
	}
	s.closeLogs()
	files := FilesFor(s.cfg.Socket)
	for _, p := range []string{s.cfg.Socket, files.Pid, files.Config} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove shim file", "path", p, "err", err)
		}
	}
	close(s.exited)
	s.log.Info("shut down")
	return nil
}

func (s *supervisor) closeLogs() {
	for _, c := range s.containers {
		c.logs.Close()
	}
}

// endLogs marks the container's log complete: it ended for good and its
// output is written (see logfile.Writer.End).
func (c *supervised) endLogs(log *slog.Logger) {
	if err := c.logs.End(); err != nil {
		log.Warn("mark container log complete", "container", c.name, "err", err)
	}
}

// endAllLogs ends the logs of containers that will never run.
func (s *supervisor) endAllLogs() {
	for _, c := range s.containers {
		c.endLogs(s.log)
	}
}
