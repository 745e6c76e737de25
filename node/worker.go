package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm"
	"github.com/cube-platform/cube/shim"
)

// worker owns one instance on this node. Its goroutine applies the newest
// version of the instance one step at a time; a second goroutine follows
// the shim's state and reports it.
type worker struct {
	a   *Agent
	uid string
	dir string

	kick chan struct{}
	// settled is closed after the first reconcile: by then a shim that
	// outlived the previous agent has been adopted, or the create tried.
	settled chan struct{}

	mu      sync.Mutex
	latest  *v1.Instance       // protected by mu
	removed bool               // the instance is gone without our teardown; protected by mu
	shim    *shim.Client       // protected by mu
	ip      string             // protected by mu
	monitor context.CancelFunc // protected by mu

	// transitionFailures counts the failed suspends or resumes in a row
	// and retryAt is when the next may be tried; only the worker's own
	// goroutine uses them.
	transitionFailures int
	retryAt            time.Time
}

func newWorker(a *Agent, in *v1.Instance) *worker {
	return &worker{a: a, uid: in.Metadata.UID, dir: filepath.Join(a.instancesDir(), in.Metadata.UID), kick: make(chan struct{}, 1), settled: make(chan struct{})}
}

// update hands the worker a version of its instance and wakes it. A
// version older than the one it has (a watch event of its own earlier
// report, which arrives after the report's answer) is not kept.
func (w *worker) update(in *v1.Instance) {
	w.observe(in)
	w.kick1()
}

// observe keeps in as the newest version if it is not older than the one
// the worker has; resourceVersions compare as numbers.
func (w *worker) observe(in *v1.Instance) {
	w.mu.Lock()
	if w.latest == nil || !v1.NewerResourceVersion(w.latest.Metadata.ResourceVersion, in.Metadata.ResourceVersion) {
		w.latest = in
	}
	w.mu.Unlock()
}

// remove tells the worker that its instance is gone from the control
// plane: tear it down by UID and exit.
func (w *worker) remove() {
	w.mu.Lock()
	w.removed = true
	w.mu.Unlock()
	w.kick1()
}

func (w *worker) kick1() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *worker) current() *v1.Instance {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

func (w *worker) settle() {
	select {
	case <-w.settled:
	default:
		close(w.settled)
	}
}

func (w *worker) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			w.stopMonitor()
			return
		case <-w.kick:
		}
		in := w.current()
		w.mu.Lock()
		removed := w.removed
		w.mu.Unlock()
		if removed {
			w.stopMonitor()
			if err := w.a.teardown(ctx, w.uid); err != nil {
				if ctx.Err() == nil {
					w.a.log.Warn("teardown of a removed instance failed; will retry", "uid", w.uid, "err", err)
					go func() { sleep(ctx, 2*time.Second); w.kick1() }()
				}
				continue
			}
			w.a.log.Info("instance removed without this node's teardown; torn down", "uid", w.uid, "tenant", in.Metadata.Tenant, "name", in.Metadata.Name)
			w.a.forget(w.uid, false)
			return
		}
		done, err := w.reconcile(ctx, in)
		w.settle()
		if err != nil && ctx.Err() == nil {
			w.a.log.Warn("reconcile failed; will retry", "tenant", in.Metadata.Tenant, "name", in.Metadata.Name, "err", err)
			go func() { sleep(ctx, 2*time.Second); w.update(w.current()) }()
		}
		if done {
			w.a.forget(w.uid, true)
			return
		}
	}
}

// reconcile moves the instance one step towards what the control plane
// wants. done means the instance is gone and the worker can exit.
func (w *worker) reconcile(ctx context.Context, in *v1.Instance) (done bool, err error) {
	log := w.a.log.With("tenant", in.Metadata.Tenant, "name", in.Metadata.Name)
	if in.Metadata.DeletionTimestamp != nil {
		w.stopMonitor()
		if err := w.a.teardown(ctx, w.uid); err != nil {
			return false, err
		}
		if err := w.a.cfg.Client.FinalizeDelete(ctx, in.Metadata.Tenant, in.Metadata.Name); err != nil && !errors.Is(err, errNotFound) {
			return false, fmt.Errorf("finalize deletion: %w", err)
		}
		log.Info("instance removed")
		return true, nil
	}
	if in.Status.Preemption != nil {
		if in.Status.Phase.Terminal() && in.Status.Reason == "Preempted" {
			return false, nil
		}
		return false, w.preempt(ctx, in)
	}
	w.mu.Lock()
	hasShim := w.shim != nil
	w.mu.Unlock()
	if hasShim {
		w.transition(ctx, in)
		return false, nil
	}
	// Adopt a shim that outlived a previous agent.
	c := liveShim(ctx, w.dir)
	if c != nil {
		w.readIP()
		if in.Status.Phase == v1.PhaseCreating {
			// The agent that launched it may have stopped before the
			// network was attached and the shim told to start.
			if err := w.resume(ctx, c); err != nil {
				return false, fmt.Errorf("resume the creation of an adopted shim: %w", err)
			}
		}
		log.Info("adopted running shim")
		w.startMonitor(ctx, c)
		w.transition(ctx, in)
		return false, nil
	}
	switch in.Status.Phase {
	case v1.PhaseScheduled, v1.PhaseCreating, v1.PhaseRunning:
	case v1.PhaseSuspended:
		return false, w.relaunchSuspended(ctx, in)
	default:
		return false, nil // finished, and its shim is gone: nothing to run
	}
	now := w.a.cfg.Now().UTC()
	var lost *lostShim
	if in.Status.Phase != v1.PhaseScheduled {
		log.Warn("shim is gone; starting the instance again", "phase", in.Status.Phase)
		lost = lostShimOf(in)
	}
	creating := func(cur *v1.Instance) v1.InstanceStatus {
		st := cur.Status
		st.Phase, st.CreatingAt, st.Reason, st.Message = v1.PhaseCreating, &now, "", ""
		if lost != nil {
			st.Reason, st.Message = "ShimLost", "the instance's shim stopped; starting its containers again"
		}
		return st
	}
	if err := w.report(ctx, in, creating); err != nil {
		return false, err
	}
	c, err = w.create(ctx, in, lost)
	if err != nil {
		log.Warn("create failed", "err", err)
		fin := w.a.cfg.Now().UTC()
		failed := func(cur *v1.Instance) v1.InstanceStatus {
			st := creating(cur)
			st.Phase, st.Reason, st.Message, st.FinishedAt = v1.PhaseFailed, "CreateFailed", err.Error(), &fin
			return st
		}
		return false, w.report(ctx, in, failed)
	}
	w.startMonitor(ctx, c)
	return false, nil
}

// maxReportAttempts bounds how often one report is computed again after
// the instance changed under it.
const maxReportAttempts = 8

// report writes the status that status computes from in. The server
// merges only the fields the node owns, and refuses a report computed
// from a version of the instance that is no longer the stored one (the
// scheduler may have written preemption in between); then the worker
// reads the instance again and computes the report anew from it. The
// server also refuses it when the instance moved to another node.
func (w *worker) report(ctx context.Context, in *v1.Instance, status func(*v1.Instance) v1.InstanceStatus) error {
	for attempt := 1; ; attempt++ {
		cp := *in
		cp.Status = status(in)
		cp.Status.Node = w.a.cfg.Name
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := w.a.cfg.Client.UpdateStatus(rctx, &cp)
		cancel()
		if err == nil {
			w.observe(out)
			return nil
		}
		if !errors.Is(err, errdefs.ErrConflict) || attempt >= maxReportAttempts {
			return fmt.Errorf("report status: %w", err)
		}
		rctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		fresh, gerr := w.a.cfg.Client.GetTenantInstance(rctx, in.Metadata.Tenant, in.Metadata.Name)
		cancel()
		if gerr != nil {
			return fmt.Errorf("report status: %w; reading the instance again: %v", err, gerr)
		}
		if fresh.Metadata.UID != w.uid || fresh.Status.Node != w.a.cfg.Name {
			return fmt.Errorf("report status: %w", err)
		}
		w.observe(fresh)
		in = fresh
	}
}

func (w *worker) startMonitor(ctx context.Context, c *shim.Client) {
	mctx, cancel := context.WithCancel(ctx)
	w.mu.Lock()
	w.shim, w.monitor = c, cancel
	w.mu.Unlock()
	w.a.wg.Add(1)
	go func() { defer w.a.wg.Done(); w.follow(mctx, c) }()
}

func (w *worker) stopMonitor() {
	w.mu.Lock()
	if w.monitor != nil {
		w.monitor()
	}
	w.shim, w.monitor = nil, nil
	w.mu.Unlock()
}

// follow long-polls the shim and reports every change of state.
func (w *worker) follow(ctx context.Context, c *shim.Client) {
	var after uint64
	var last v1.InstanceStatus
	failures := 0
	for ctx.Err() == nil {
		st, err := c.State(ctx, after)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			if failures >= 5 {
				// The shim is gone: let reconcile decide what to do.
				w.a.log.Warn("shim stopped answering", "uid", w.uid, "err", err)
				w.mu.Lock()
				w.shim, w.monitor = nil, nil
				w.mu.Unlock()
				w.update(w.current())
				return
			}
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		failures = 0
		after = st.Version
		in := w.current()
		if in == nil || in.Metadata.DeletionTimestamp != nil {
			continue
		}
		w.mu.Lock()
		ip := w.ip
		w.mu.Unlock()
		now := w.a.cfg.Now().UTC()
		compute := func(cur *v1.Instance) v1.InstanceStatus {
			status := statusFromShim(cur.Status, st, ip, now)
			if backendOf(cur) == sandbox.BackendMicroVM {
				status.Accelerator = w.a.cfg.Runtimes.Status().Accelerator
				if status.Phase == v1.PhaseRunning {
					// The boot record is written once the guest is set up.
					if rec, err := microvm.ReadBootRecord(filepath.Join(w.dir, "sandbox")); err == nil {
						status.VMBoot, status.VMBootWarning = rec.From, ""
						if rec.From == microvm.FromWarm {
							// A clone of the template too, restored ahead.
							status.VMBoot = microvm.FromTemplate
						}
						if rec.Fallback != "" {
							// The reason names host paths: the node's log
							// has it, the tenant gets the fact.
							status.VMBootWarning = "the node's template for this VM size could not be cloned; it booted cold"
						}
					}
				}
			}
			markPreempted(&status)
			return status
		}
		if loadingSuspended(in, st) {
			continue
		}
		status := compute(in)
		if reflect.DeepEqual(status, last) {
			continue
		}
		if err := w.report(ctx, in, compute); err != nil {
			if ctx.Err() == nil {
				w.a.log.Warn("status report failed", "uid", w.uid, "err", err)
				after = 0 // report again on the next answer
				sleep(ctx, 500*time.Millisecond)
			}
			continue
		}
		last = status
	}
}

func (w *worker) readIP() {
	b, err := os.ReadFile(filepath.Join(w.dir, "attachment.json"))
	if err != nil {
		return
	}
	var att struct {
		IP string `json:"ip"`
	}
	if json.Unmarshal(b, &att) == nil {
		w.mu.Lock()
		w.ip = att.IP
		w.mu.Unlock()
	}
}
