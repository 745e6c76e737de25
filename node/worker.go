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

	mu      sync.Mutex
	latest  *v1.Instance       // protected by mu
	shim    *shim.Client       // protected by mu
	ip      string             // protected by mu
	monitor context.CancelFunc // protected by mu
}

func newWorker(a *Agent, in *v1.Instance) *worker {
	return &worker{a: a, uid: in.Metadata.UID, dir: filepath.Join(a.instancesDir(), in.Metadata.UID), kick: make(chan struct{}, 1)}
}

func (w *worker) update(in *v1.Instance) {
	w.mu.Lock()
	w.latest = in
	w.mu.Unlock()
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

func (w *worker) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			w.stopMonitor()
			return
		case <-w.kick:
		}
		in := w.current()
		done, err := w.reconcile(ctx, in)
		if err != nil && ctx.Err() == nil {
			w.a.log.Warn("reconcile failed; will retry", "tenant", in.Metadata.Tenant, "name", in.Metadata.Name, "err", err)
			go func() { sleep(ctx, 2*time.Second); w.update(w.current()) }()
		}
		if done {
			w.a.forget(w.uid)
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
		return false, nil
	}
	switch in.Status.Phase {
	case v1.PhaseScheduled, v1.PhaseCreating, v1.PhaseRunning:
	default:
		return false, nil // finished, and its shim is gone: nothing to run
	}
	now := w.a.cfg.Now().UTC()
	st := in.Status
	st.Phase, st.CreatingAt, st.Reason, st.Message = v1.PhaseCreating, &now, "", ""
	var lost *lostShim
	if in.Status.Phase != v1.PhaseScheduled {
		log.Warn("shim is gone; starting the instance again", "phase", in.Status.Phase)
		lost = lostShimOf(in)
		st.Reason, st.Message = "ShimLost", "the instance's shim stopped; starting its containers again"
	}
	if err := w.report(ctx, in, st); err != nil {
		return false, err
	}
	c, err = w.create(ctx, in, lost)
	if err != nil {
		log.Warn("create failed", "err", err)
		st.Phase, st.Reason, st.Message = v1.PhaseFailed, "CreateFailed", err.Error()
		fin := w.a.cfg.Now().UTC()
		st.FinishedAt = &fin
		return false, w.report(ctx, in, st)
	}
	w.startMonitor(ctx, c)
	return false, nil
}

// report writes a status for in; the server refuses it if the instance
// moved to another node.
func (w *worker) report(ctx context.Context, in *v1.Instance, st v1.InstanceStatus) error {
	cp := *in
	cp.Status = st
	cp.Status.Node = w.a.cfg.Name
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := w.a.cfg.Client.UpdateStatus(rctx, &cp)
	if err != nil {
		return fmt.Errorf("report status: %w", err)
	}
	w.mu.Lock()
	if w.latest == nil || w.latest.Metadata.ResourceVersion < out.Metadata.ResourceVersion || len(w.latest.Metadata.ResourceVersion) < len(out.Metadata.ResourceVersion) {
		if w.latest == nil || w.latest.Metadata.DeletionTimestamp == nil {
			w.latest = out
		}
	}
	w.mu.Unlock()
	return nil
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
		status := statusFromShim(in.Status, st, ip, w.a.cfg.Now().UTC())
		markPreempted(&status)
		if reflect.DeepEqual(status, last) {
			continue
		}
		if err := w.report(ctx, in, status); err != nil {
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
