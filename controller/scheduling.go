// Package controller holds the control-plane loops that act on the store:
// scheduling (the elected leader places pending instances with the pure
// scheduler and commits the plan through the Applier). It talks to etcd
// through store and decides through pure functions; it never touches a
// node.
package controller

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cube-platform/cube/scheduler"
	"github.com/cube-platform/cube/store"
)

// ElectionKey is where scheduler replicas campaign.
const ElectionKey = "/cube/leader/scheduler"

// Scheduling runs placement while this replica is the elected leader.
type Scheduling struct {
	Store     *store.Store
	Scheduler *scheduler.Scheduler
	Log       *slog.Logger
	Now       func() time.Time
	// Identity names this replica in the election.
	Identity string
}

// Run campaigns, then places until ctx ends or leadership is lost (then it
// campaigns again).
func (s *Scheduling) Run(ctx context.Context) error {
	log := s.Log.With("component", "scheduler", "replica", s.Identity)
	runElected(ctx, s.Store, ElectionKey, s.Identity, log, func(ctx context.Context) { s.lead(ctx, log) })
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// lead runs a pass on every instance change (bursts coalesced) and at
// least every second, to notice nodes coming and going.
func (s *Scheduling) lead(ctx context.Context, log *slog.Logger) {
	insts := s.Store.Instances()
	applier := &Applier{Store: s.Store, Log: log}
	for ctx.Err() == nil {
		events := insts.Watch(ctx, insts.Prefix(), 0)
		s.pass(ctx, applier, log)
		tick := time.NewTicker(time.Second)
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case _, ok := <-events:
				if !ok {
					break loop
				}
				for drained := false; !drained; {
					select {
					case _, ok := <-events:
						if !ok {
							break loop
						}
					default:
						drained = true
					}
				}
			case <-tick.C:
			}
			s.pass(ctx, applier, log)
		}
		tick.Stop()
	}
}

// Pass reads the state, schedules every pending instance and applies the
// plan once.
func (s *Scheduling) pass(ctx context.Context, applier *Applier, log *slog.Logger) {
	if err := s.Pass(ctx, applier); err != nil && ctx.Err() == nil {
		log.Warn("scheduling pass failed", "err", err)
	}
}

// Pass is one read-decide-apply round; exported for tests and benches.
func (s *Scheduling) Pass(ctx context.Context, applier *Applier) error {
	st, err := ReadState(ctx, s.Store)
	if err != nil {
		return err
	}
	queue, byID := st.Pending()
	if len(queue) == 0 {
		return nil
	}
	plan := s.Scheduler.Schedule(st.Snapshot(), queue, s.Now())
	dropPortConflicts(st, &plan, byID)
	stats, err := applier.Apply(ctx, st, plan, byID)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	s.Log.Debug("scheduling pass", "pending", len(queue), "bound", stats.Bound, "rechecked", stats.Rechecked,
		"refused", stats.Refused, "preempted", stats.Preempted, "unschedulable", len(plan.Unschedulable))
	return nil
}
