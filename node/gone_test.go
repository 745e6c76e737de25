package node

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/network"
)

// fakeNetwork records teardowns. It stands in for the CNI manager, which
// needs root and plugins; the real one is covered by the e2e suite.
type fakeNetwork struct {
	mu       sync.Mutex
	torndown map[string]bool // protected by mu
}

func (f *fakeNetwork) Pin(context.Context, string, string, []network.PortMapping) (string, error) {
	return "", nil
}
func (f *fakeNetwork) Attach(context.Context, string) (network.Attachment, error) {
	return network.Attachment{}, nil
}
func (f *fakeNetwork) Setup(context.Context, string, string, []network.PortMapping) (network.Attachment, error) {
	return network.Attachment{}, nil
}
func (f *fakeNetwork) Teardown(_ context.Context, id string) error {
	f.mu.Lock()
	f.torndown[id] = true
	f.mu.Unlock()
	return nil
}
func (f *fakeNetwork) List(context.Context) ([]string, error) { return nil, nil }
func (f *fakeNetwork) wasTornDown(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.torndown[id]
}

// TestDeletedWithoutTeardown: a running agent sees an instance of its
// node deleted outright (a force delete while its lease had lapsed: the
// API removes the object without the node's teardown). The agent tears
// it down by UID from the DELETED event, with no relist, and stops its
// worker.
func TestDeletedWithoutTeardown(t *testing.T) {
	env := newReportEnv(t)
	ctx := context.Background()
	// The instance ended (nothing to run again) but its state is here.
	if _, err := env.st.Instances().Mutate(ctx, env.key, func(in *v1.Instance) error {
		in.Status.Phase = v1.PhaseSucceeded
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	nw := &fakeNetwork{torndown: map[string]bool{}}
	state := t.TempDir()
	dir := filepath.Join(state, "instances", "u1")
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fakeAgentConfig(t, env, state)
	cfg.Network = nw
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	waitFor(t, "the agent has a worker for the instance", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.workers["u1"] != nil
	})
	if nw.wasTornDown("u1") {
		t.Fatal("torn down while the instance exists")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("state of a live instance: %v", err)
	}
	if err := env.st.Instances().Delete(ctx, env.key, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted instance is torn down and its worker stopped", func() bool {
		a.mu.Lock()
		w := a.workers["u1"]
		a.mu.Unlock()
		_, err := os.Stat(dir)
		return os.IsNotExist(err) && nw.wasTornDown("u1") && w == nil
	})
}

// fakeAgentConfig is an agent of node n1 on env's API, with state in
// state: a real image store, fakeNetwork, and a shim command that fails
// (for instances that have nothing to launch).
func fakeAgentConfig(t *testing.T, env *reportEnv, state string) Config {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	imgs, err := image.NewLocalStore(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	return Config{Name: "n1", StateDir: state, Client: env.node, Images: imgs, Network: &fakeNetwork{torndown: map[string]bool{}},
		ShimCommand: []string{"false"}, Capacity: v1.Resources{CPU: "1", Memory: "1Gi"}, Log: log}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
