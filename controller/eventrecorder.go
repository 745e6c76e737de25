package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/store"
)

// EventsElectionKey is where event recorders campaign: one replica records.
const EventsElectionKey = "/cube/leader/events"

// eventsProgressKey holds the last instance revision whose events are
// recorded, so a new leader resumes there: nothing is missed, and a change
// replayed yields the same keys (see eventKey), so nothing is doubled.
const eventsProgressKey = "/cube/eventsprogress"

// DefaultEventRetention is how long events are kept.
const DefaultEventRetention = time.Hour

// maxEventOps bounds the operations of one transaction (etcd refuses more
// than 128 by default).
const maxEventOps = 100

// EventRecorder turns every change of every instance into events (see
// InstanceEvents) and stores them with a lease, so they expire after the
// retention. It works from the store's own history, so every writer (API
// server, scheduler, node agents) is covered without recording anything
// itself.
type EventRecorder struct {
	Store *store.Store
	Log   *slog.Logger
	Now   func() time.Time
	// Identity names this replica in the election.
	Identity string
	// Retention defaults to DefaultEventRetention.
	Retention time.Duration

	lease     clientv3.LeaseID
	leaseFrom time.Time
}

// Run records while this replica is the elected recorder, until ctx ends.
func (r *EventRecorder) Run(ctx context.Context) error {
	log := r.Log.With("component", "events", "replica", r.Identity)
	runElected(ctx, r.Store, EventsElectionKey, r.Identity, log, func(ctx context.Context) {
		for ctx.Err() == nil {
			if err := r.follow(ctx, log); err != nil && ctx.Err() == nil {
				log.Warn("recording events; resuming", "err", err)
				sleepCtx(ctx, time.Second)
			}
		}
	})
	return nil
}

// follow watches the instances from the recorded progress and records
// their events, batching the changes that are already waiting.
func (r *EventRecorder) follow(ctx context.Context, log *slog.Logger) error {
	from, err := r.resumeRevision(ctx, log)
	if err != nil {
		return err
	}
	insts := r.Store.Instances()
	changes := insts.Watch(ctx, insts.Prefix(), from)
	for {
		var batch []store.Event[*v1.Instance]
		ev, ok := <-changes
		if !ok {
			return errors.New("the instance watch ended")
		}
		batch = append(batch, ev)
	drain:
		for len(batch) < maxEventOps {
			select {
			case ev, ok := <-changes:
				if !ok {
					break drain
				}
				batch = append(batch, ev)
			default:
				break drain
			}
		}
		if err := r.record(ctx, batch); err != nil {
			return err
		}
	}
}

// resumeRevision is the revision to watch from: the recorded progress, or
// now when there is none or its history was compacted away.
func (r *EventRecorder) resumeRevision(ctx context.Context, log *slog.Logger) (int64, error) {
	cli := r.Store.Client()
	resp, err := cli.Get(ctx, eventsProgressKey)
	if err != nil {
		return 0, err
	}
	if len(resp.Kvs) == 0 {
		// Start the history here, so a successor that takes over before
		// the first event resumes from this point too.
		rev := resp.Header.Revision
		_, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(eventsProgressKey), "=", 0)).
			Then(clientv3.OpPut(eventsProgressKey, strconv.FormatInt(rev, 10))).Commit()
		return rev, err
	}
	rev, err := strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
	if err != nil {
		return resp.Header.Revision, nil
	}
	if _, err := cli.Get(ctx, eventsProgressKey, clientv3.WithRev(max(rev, 1))); errors.Is(err, rpctypes.ErrCompacted) {
		log.Warn("the history since the last recorded event was compacted; events of those changes are lost", "from", rev, "to", resp.Header.Revision)
		return resp.Header.Revision, nil
	} else if err != nil {
		return 0, err
	}
	return rev, nil
}

// record stores the events of batch, in transactions that also advance
// the progress key.
func (r *EventRecorder) record(ctx context.Context, batch []store.Event[*v1.Instance]) error {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	lease, err := r.leaseID(ctx)
	if err != nil {
		return err
	}
	var ops []clientv3.Op
	var last int64
	flush := func() error {
		if last == 0 {
			return nil
		}
		ops = append(ops, clientv3.OpPut(eventsProgressKey, strconv.FormatInt(last, 10)))
		if _, err := r.Store.Client().Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("record events: %w", err)
		}
		ops, last = ops[:0], 0
		return nil
	}
	for _, ch := range batch {
		prev, cur := ch.Prev(), ch.Object
		switch ch.Type {
		case v1.EventAdded:
			prev = nil
		case v1.EventDeleted:
			prev, cur = ch.Object, nil
		}
		evs := InstanceEvents(prev, cur, now().UTC())
		if len(ops)+len(evs)+1 > maxEventOps {
			if err := flush(); err != nil {
				return err
			}
		}
		for i := range evs {
			e := &evs[i]
			// Keys sort in the order things happened, and a replayed
			// change rewrites the same keys.
			seq := fmt.Sprintf("%016x-%02d", ch.Revision, i)
			e.Metadata.Name = e.Instance + "." + seq
			val, err := store.Encode(e)
			if err != nil {
				return err
			}
			key := r.Store.Events().Key(e.Metadata.Tenant, e.Instance, seq)
			ops = append(ops, clientv3.OpPut(key, val, clientv3.WithLease(lease)))
		}
		last = ch.Revision
	}
	return flush()
}

// leaseID returns a lease that outlives the retention; one lease serves
// the events of a few minutes, so there are few leases, not one per event.
func (r *EventRecorder) leaseID(ctx context.Context) (clientv3.LeaseID, error) {
	retention := r.Retention
	if retention <= 0 {
		retention = DefaultEventRetention
	}
	const share = 5 * time.Minute
	if r.lease != 0 && time.Since(r.leaseFrom) < share {
		return r.lease, nil
	}
	resp, err := r.Store.Client().Grant(ctx, int64((retention + share).Seconds()))
	if err != nil {
		return 0, fmt.Errorf("grant the events lease: %w", err)
	}
	r.lease, r.leaseFrom = resp.ID, time.Now()
	return r.lease, nil
}
