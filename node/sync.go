package node

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
)

// syncLoop lists the instances bound to this node, hands each to its
// worker, removes local leftovers of instances that no longer exist, and
// then follows the watch; when the watch ends it lists again.
func (a *Agent) syncLoop(ctx context.Context) {
	opts := client.ListOptions{FieldSelector: "status.node=" + a.cfg.Name}
	for ctx.Err() == nil {
		list, err := a.cfg.Client.ListInstances(ctx, opts)
		if err != nil {
			a.log.Warn("list instances failed; retrying", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		seen := map[string]bool{}
		for _, in := range list.Items {
			seen[in.Metadata.UID] = true
			a.dispatch(ctx, in)
		}
		a.collectOrphans(ctx, seen)
		a.listedOnce.Do(func() { close(a.listed) })
		events, err := a.cfg.Client.WatchInstances(ctx, opts, list.ResourceVersion)
		if err != nil {
			a.log.Warn("watch instances failed; retrying", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		for ev := range events {
			if ev.Type == v1.EventDeleted {
				// Finalized by us, or removed without our teardown (a
				// force delete while this node's lease had lapsed).
				a.gone(ctx, ev.Object)
				continue
			}
			a.dispatch(ctx, ev.Object)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// dispatch hands the newest version of an instance to its worker.
func (a *Agent) dispatch(ctx context.Context, in *v1.Instance) {
	a.mu.Lock()
	w := a.workers[in.Metadata.UID]
	if w == nil {
		w = newWorker(a, in)
		a.workers[in.Metadata.UID] = w
		a.wg.Add(1)
		go func() { defer a.wg.Done(); w.run(ctx) }()
	}
	a.mu.Unlock()
	w.update(in)
}

// forget drops the worker of uid; finalized says the worker removed the
// instance itself, so the DELETED event that follows needs no teardown.
func (a *Agent) forget(uid string, finalized bool) {
	a.mu.Lock()
	delete(a.workers, uid)
	if finalized {
		a.finalized[uid] = true
	}
	a.mu.Unlock()
}

// gone tears down, by UID, an instance the control plane no longer has
// for this node: deleted without this node's teardown (a force delete
// while its lease had lapsed), or moved away. Its worker (one is started
// if none runs) stops following the shim and removes every trace; it does
// that after any step it is in the middle of, so a create in flight cannot
// leave a shim behind.
func (a *Agent) gone(ctx context.Context, in *v1.Instance) {
	uid := in.Metadata.UID
	if uid == "" {
		return
	}
	a.mu.Lock()
	if a.finalized[uid] {
		delete(a.finalized, uid)
		a.mu.Unlock()
		return
	}
	w := a.workers[uid]
	if w == nil {
		w = newWorker(a, in)
		w.latest = in
		a.workers[uid] = w
		a.wg.Add(1)
		go func() { defer a.wg.Done(); w.run(ctx) }()
	}
	a.mu.Unlock()
	w.remove()
}

// instanceMeta is written beside each instance's state so leftovers can be
// named after a crash.
type instanceMeta struct {
	Tenant string `json:"tenant"`
	Name   string `json:"name"`
	UID    string `json:"uid"`
}

// collectOrphans removes instance state on this host that the control
// plane no longer has (force-removed while the agent was down or its
// watch was broken), and stops the workers of instances that left.
func (a *Agent) collectOrphans(ctx context.Context, live map[string]bool) {
	a.mu.Lock()
	var left []*worker
	for uid, w := range a.workers {
		if !live[uid] {
			left = append(left, w)
		}
	}
	clear(a.finalized) // their DELETED events are behind this list
	a.mu.Unlock()
	for _, w := range left {
		a.log.Info("instance left this node; removing it", "uid", w.uid)
		w.remove()
	}
	entries, _ := os.ReadDir(a.instancesDir())
	local := map[string]bool{}
	for _, e := range entries {
		uid := e.Name()
		local[uid] = true
		a.mu.Lock()
		w := a.workers[uid]
		a.mu.Unlock()
		if live[uid] || w != nil {
			continue
		}
		var m instanceMeta
		b, _ := os.ReadFile(filepath.Join(a.instancesDir(), uid, "meta.json"))
		_ = json.Unmarshal(b, &m)
		a.log.Info("removing orphaned instance", "uid", uid, "tenant", m.Tenant, "name", m.Name)
		if err := a.teardown(ctx, uid); err != nil {
			a.log.Warn("orphan teardown failed", "uid", uid, "err", err)
		}
	}
	ids, err := a.cfg.Network.List(ctx)
	if err != nil {
		return
	}
	for _, id := range ids {
		if !live[id] && !local[id] {
			_ = a.cfg.Network.Teardown(ctx, id)
		}
	}
}
