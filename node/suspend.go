package node

import (
	"context"
	"fmt"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/shim"
)

// Suspend and resume: spec.suspend is what the control plane wants, the
// phase what the shim last reported. The worker asks the shim to suspend
// a Running instance that should be suspended and to resume a Suspended
// one that should run; the shim's state then reports the outcome. A
// suspended instance keeps its shim (which runs nothing), its network
// attachment (so its IP) and its state dir with the writable layer and
// the saved VM. If that shim dies, a new one is launched on the same
// config: its sandbox loads the saved state and it reports Suspended
// again, so the instance is neither restarted nor Failed.

// transitionTimeout bounds one suspend or resume call (the shim bounds
// its own work by a little less).
const transitionTimeout = 6 * time.Minute

// Back-off between failed attempts at the same transition.
const (
	minTransitionBackoff = 2 * time.Second
	maxTransitionBackoff = time.Minute
)

// transition asks the shim for the suspend or resume in wants and does
// not already have. A failure is reported by the shim's state
// (SuspendFailed, ResumeFailed) and tried again after a back-off.
func (w *worker) transition(ctx context.Context, in *v1.Instance) {
	w.mu.Lock()
	c := w.shim
	w.mu.Unlock()
	if c == nil || in.Metadata.DeletionTimestamp != nil || in.Status.Preemption != nil {
		return
	}
	var call func(context.Context) error
	verb := ""
	switch {
	case in.Spec.Suspend && in.Status.Phase == v1.PhaseRunning:
		call, verb = c.Suspend, "suspend"
	case !in.Spec.Suspend && in.Status.Phase == v1.PhaseSuspended:
		call, verb = c.Resume, "resume"
	default:
		w.transitionFailures = 0
		return
	}
	if wait := w.retryAt.Sub(time.Now()); wait > 0 {
		return // the kick that set retryAt comes then
	}
	log := w.a.log.With("tenant", in.Metadata.Tenant, "name", in.Metadata.Name)
	tctx, cancel := context.WithTimeout(ctx, transitionTimeout)
	t0 := time.Now()
	err := call(tctx)
	cancel()
	if err == nil {
		log.Info("instance "+verb+"d", "took", time.Since(t0))
		w.transitionFailures, w.retryAt = 0, time.Time{}
		return
	}
	if ctx.Err() != nil {
		return
	}
	backoff := min(minTransitionBackoff<<min(w.transitionFailures, 10), maxTransitionBackoff)
	w.transitionFailures++
	w.retryAt = time.Now().Add(backoff)
	log.Warn(verb+" failed; will retry", "err", err, "retry_in", backoff)
	go func() { sleep(ctx, backoff); w.update(w.current()) }()
}

// relaunchSuspended launches a new shim for a Suspended instance whose
// shim is gone (killed, or the node restarted): on the same config, so
// its sandbox loads the saved state and runs nothing. The network is
// attached as it was (Pin and Attach keep an existing attachment, so the
// IP stays) and the start the shim gets changes nothing on a loaded
// sandbox; if the saved state was lost, the containers start again as
// after any lost shim. The phase stays Suspended meanwhile.
func (w *worker) relaunchSuspended(ctx context.Context, in *v1.Instance) error {
	w.a.log.Warn("shim of a suspended instance is gone; a new one loads its saved state", "tenant", in.Metadata.Tenant, "name", in.Metadata.Name)
	c, err := w.create(ctx, in, suspendedShimOf(in))
	if err != nil {
		return fmt.Errorf("relaunch the shim of a suspended instance: %w", err)
	}
	w.startMonitor(ctx, c)
	w.transition(ctx, in)
	return nil
}

// suspendedShimOf is what a shim that replaces the lost shim of a
// suspended instance takes over: its restart counts as they are (nothing
// ran again) and the containers that had ended for good.
func suspendedShimOf(in *v1.Instance) *lostShim {
	l := lostShimOf(in)
	l.keepNetwork = true
	for _, cs := range in.Status.Containers {
		if _, ended := l.exited[cs.Name]; !ended {
			l.restarts[cs.Name] = cs.RestartCount
		}
	}
	return l
}

// loadingSuspended tells a shim state not to report: a new shim of a
// Suspended instance is still creating (loading) its sandbox, which is no
// change of phase.
func loadingSuspended(in *v1.Instance, st shim.State) bool {
	return in.Status.Phase == v1.PhaseSuspended && st.Phase == shim.PhaseCreating
}

// suspensionTimes records in out the suspension that begins or ends with
// the shim's state st, for metering: suspendedAt while Suspended (the
// shim's time if it has one, else now; a shim that replaced the one that
// suspended keeps the first time), and on the resume resumedAt and the
// suspension's length added to suspendedTotal.
func suspensionTimes(out *v1.InstanceStatus, prev v1.InstanceStatus, st shim.State, now time.Time) {
	at := func(t time.Time) *time.Time {
		if t.IsZero() {
			t = now
		}
		t = t.UTC()
		return &t
	}
	switch {
	case out.Phase == v1.PhaseSuspended && out.SuspendedAt == nil:
		out.SuspendedAt = at(st.SuspendedAt)
		if prev.ResumedAt != nil && out.SuspendedAt.Before(*prev.ResumedAt) {
			out.SuspendedAt = at(now) // not this suspension's time
		}
	case out.Phase != v1.PhaseSuspended && prev.SuspendedAt != nil:
		resumed := at(st.ResumedAt)
		if resumed.Before(*prev.SuspendedAt) {
			resumed = at(now)
		}
		total, _ := time.ParseDuration(prev.SuspendedTotal)
		out.SuspendedTotal = (total + resumed.Sub(*prev.SuspendedAt)).String()
		out.ResumedAt, out.SuspendedAt = resumed, nil
	}
}
