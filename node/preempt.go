package node

import (
	"context"
	"fmt"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
)

// preemptGrace is how long a preempted instance's containers get between
// SIGTERM and SIGKILL.
const preemptGrace = 10 * time.Second

// preempt stops an instance the scheduler gave away to a higher band: a
// graceful stop, then a Failed status whose reason says who took its place.
// The shim stays, so logs remain readable until the instance is removed.
func (w *worker) preempt(ctx context.Context, in *v1.Instance) error {
	w.mu.Lock()
	c := w.shim
	w.mu.Unlock()
	if c == nil {
		// Not adopted yet (the agent just restarted): a shim may still run.
		c = liveShim(ctx, w.dir)
	}
	if c != nil {
		sctx, cancel := context.WithTimeout(ctx, preemptGrace+10*time.Second)
		err := c.Stop(sctx, preemptGrace)
		cancel()
		if err != nil {
			return fmt.Errorf("stop preempted instance: %w", err)
		}
	}
	now := w.a.cfg.Now().UTC()
	w.a.log.Info("instance preempted", "tenant", in.Metadata.Tenant, "name", in.Metadata.Name, "by", in.Status.Preemption.By)
	return w.report(ctx, in, func(cur *v1.Instance) v1.InstanceStatus {
		st := cur.Status
		markPreempted(&st)
		if st.FinishedAt == nil {
			st.FinishedAt = &now
		}
		return st
	})
}

// markPreempted keeps the preemption visible in a status the shim's report
// would otherwise overwrite: a preempted instance ends Failed/Preempted.
func markPreempted(st *v1.InstanceStatus) {
	if st.Preemption == nil {
		return
	}
	st.Reason, st.Message = "Preempted", st.Preemption.Message
	if st.Phase != v1.PhasePending && st.Phase != v1.PhaseScheduled {
		st.Phase = v1.PhaseFailed
	}
}
