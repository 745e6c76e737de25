package shim

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/internal/logfile"
	"github.com/cube-platform/cube/sandbox"
)

// Suspend and resume. A suspended sandbox runs nothing, but its containers
// keep their phase: the supervisor publishes no exit and starts nothing
// until the resume (a restart that comes due waits for it), and stop only
// disables restarts (there is no process to signal; Destroy removes the
// saved state). A shim started on a sandbox that Create found suspended
// (the one before it was killed) supervises nothing until the resume,
// which hands the backend the container logs and adopts the running
// containers by Wait, never Start.

// Reasons a shim gives while its last suspend or resume failed.
const (
	ReasonSuspendFailed = "SuspendFailed"
	ReasonResumeFailed  = "ResumeFailed"
)

// suspendTimeout bounds one suspend or resume: saving or loading a VM's
// memory to or from the node's disk.
const suspendTimeout = 5 * time.Minute

// adoption is what a resume hands a container the shim adopts: the log
// streams its output goes to, or the exit it had before the suspend.
type adoption struct {
	stdout, stderr io.WriteCloser
	startedAt      time.Time
	exited         *sandbox.ContainerState
}

func (s *supervisor) suspender() (sandbox.Suspender, error) {
	sus, ok := s.sb.(sandbox.Suspender)
	if !ok {
		return nil, fmt.Errorf("%w: backend %s cannot be suspended: only microvm saves a sandbox's whole state", errdefs.ErrInvalid, s.cfg.Backend)
	}
	return sus, nil
}

// ready reports whether the sandbox is made and every container had its
// first start (or was loaded suspended), waiting for that within ctx.
func (s *supervisor) ready(ctx context.Context) error {
	select {
	case <-s.booted:
	case <-ctx.Done():
		return fmt.Errorf("%w: the sandbox is still being created", errdefs.ErrConflict)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.createErr != "":
		return fmt.Errorf("%w: the sandbox failed: %s", errdefs.ErrConflict, s.createErr)
	case s.stopped:
		return fmt.Errorf("%w: the instance is stopped", errdefs.ErrConflict)
	}
	return nil
}

// suspend saves the sandbox (a no-op when it is suspended). No container
// starts while it is saved: a start in flight finishes first, and one that
// comes later waits for the resume.
func (s *supervisor) suspend(ctx context.Context) error {
	sus, err := s.suspender()
	if err != nil {
		return err
	}
	s.transitionMu.Lock()
	defer s.transitionMu.Unlock()
	if err := s.ready(ctx); err != nil {
		return err
	}
	if s.isSuspended() {
		return nil
	}
	for _, c := range s.containers {
		c.startMu.Lock()
		defer c.startMu.Unlock()
	}
	t0 := time.Now()
	if err := sus.Suspend(ctx); err != nil {
		s.log.Warn("suspend", "err", err)
		s.failed(ReasonSuspendFailed, err)
		return err
	}
	now := time.Now()
	s.update(func() {
		s.suspended, s.resumed = true, make(chan struct{})
		s.suspendedAt, s.failReason, s.failMessage, s.failures = now, "", "", 0
	})
	s.log.Info("suspended", "took", now.Sub(t0))
	return nil
}

// resume restores a suspended sandbox (a no-op when it runs). On a
// sandbox this shim loaded suspended, the running containers' output goes
// to their logs from now on and each is adopted by Wait; a container that
// had exited is judged by the restart policy as if it just did.
func (s *supervisor) resume(ctx context.Context) error {
	sus, err := s.suspender()
	if err != nil {
		return err
	}
	s.transitionMu.Lock()
	defer s.transitionMu.Unlock()
	if err := s.ready(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	suspended, loaded := s.suspended, s.loaded
	s.mu.Unlock()
	if !suspended {
		return nil
	}
	t0 := time.Now()
	var adopted map[*supervised]*adoption
	var stdio func(string) sandbox.Stdio
	if loaded {
		adopted = s.adoptions()
		stdio = func(name string) sandbox.Stdio {
			for c, a := range adopted {
				if c.name == name && a.stdout != nil {
					return sandbox.Stdio{Stdout: a.stdout, Stderr: a.stderr}
				}
			}
			return sandbox.Stdio{}
		}
	}
	if err := sus.Resume(ctx, stdio); err != nil {
		for _, a := range adopted {
			a.close()
		}
		s.log.Warn("resume", "err", err)
		s.failed(ReasonResumeFailed, err)
		return err
	}
	now := time.Now()
	s.update(func() {
		s.suspended, s.loaded = false, false
		close(s.resumed)
		s.suspendedAt, s.resumedAt, s.failReason, s.failMessage, s.failures = time.Time{}, now, "", "", 0
	})
	for _, c := range s.containers {
		if a, ok := adopted[c]; ok {
			s.running.Add(1)
			go s.supervise(c, nil, a)
		}
	}
	s.log.Info("resumed", "took", now.Sub(t0), "adopted", len(adopted))
	return nil
}

// adoptions prepares what a resume of a loaded sandbox hands each
// container that did not end for good: log streams for a running one,
// its exit for one that had exited. A container that never started gets
// neither and starts as usual.
func (s *supervisor) adoptions() map[*supervised]*adoption {
	out := map[*supervised]*adoption{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.containers {
		if c.ended {
			continue
		}
		a := &adoption{}
		switch st := c.status.ContainerState; st.Phase {
		case sandbox.PhaseRunning:
			if err := c.logs.Resume(); err != nil {
				s.log.Warn("reopen container log", "container", c.name, "err", err)
			}
			a.stdout, a.stderr = c.logs.Stream(logfile.Stdout), c.logs.Stream(logfile.Stderr)
			a.startedAt = st.StartedAt
		case sandbox.PhaseExited:
			a.exited = &st
		}
		out[c] = a
	}
	return out
}

func (a *adoption) close() {
	if a.stdout != nil {
		a.stdout.Close()
		a.stderr.Close()
	}
}

// load takes over a sandbox that Create found suspended: its containers
// as they were when it was saved, none supervised until the resume.
func (s *supervisor) load(ctx context.Context) error {
	states, err := s.sb.State(ctx)
	if err != nil {
		return fmt.Errorf("read the state of the suspended sandbox: %w", err)
	}
	s.update(func() {
		s.suspended, s.loaded, s.resumed = true, true, make(chan struct{})
		for _, c := range s.containers {
			if c.ended {
				continue
			}
			for _, st := range states {
				if st.Name != c.name {
					continue
				}
				c.status.ContainerState = st
				c.status.Reason, c.status.Message, c.status.WillRestart = "", "", false
				switch st.Phase {
				case sandbox.PhaseExited:
					c.status.Reason = terminationReason(st, false)
					if RestartsAgain(s.cfg.RestartPolicy, st.ExitCode, c.status.RestartCount, s.cfg.MaxRestarts) {
						c.status.Reason, c.status.WillRestart = ReasonCrashLoopBackOff, true
					}
				case sandbox.PhaseCreated:
					c.status.Reason = ReasonContainerCreating
				}
			}
		}
	})
	s.log.Info("sandbox loaded suspended; nothing runs until resumed")
	return nil
}

// failed records a failed suspend or resume in the state. The attempt
// number makes each failure a change the node reports, even with the same
// error as the one before.
func (s *supervisor) failed(reason string, err error) {
	s.update(func() {
		s.failures++
		verb := map[string]string{ReasonSuspendFailed: "suspend", ReasonResumeFailed: "resume"}[reason]
		s.failReason, s.failMessage = reason, fmt.Sprintf("%s failed (attempt %d): %v", verb, s.failures, err)
	})
}

func (s *supervisor) isSuspended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.suspended
}

// resumedIfSuspended returns a channel closed at the next resume while
// the sandbox is suspended, nil while it runs.
func (s *supervisor) resumedIfSuspended() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.suspended {
		return nil
	}
	return s.resumed
}

// adoptOnce waits for a container that a resume handed back running and
// reports how its run ended, as runOnce does for one it started.
func (s *supervisor) adoptOnce(c *supervised, a *adoption) sandbox.ContainerState {
	defer a.close()
	st, err := s.sb.Wait(s.ctx, c.name)
	if err != nil {
		s.log.Warn("wait for adopted container", "container", c.name, "err", err)
		now := time.Now()
		st = sandbox.ContainerState{Name: c.name, Phase: sandbox.PhaseExited, ExitCode: 128, StartedAt: a.startedAt, FinishedAt: now}
	}
	return st
}
