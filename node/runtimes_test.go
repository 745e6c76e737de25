package node

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/sandbox"
)

// readyAfterFirstLook offers runc alone to the first Status call and
// microvm with it from the second on: a guest kernel that becomes ready
// right after the node's first registration.
type readyAfterFirstLook struct {
	mu    sync.Mutex
	looks int // protected by mu
}

func (r *readyAfterFirstLook) Status() RuntimeStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.looks++
	if r.looks == 1 {
		return RuntimeStatus{Runtimes: []string{v1.RuntimeRunc}, GuestKernel: "building 99%"}
	}
	return RuntimeStatus{Runtimes: []string{v1.RuntimeMicroVM, v1.RuntimeRunc}, Accelerator: "tcg", GuestKernel: "ready"}
}

func (r *readyAfterFirstLook) VM() (sandbox.VMOptions, bool) { return sandbox.VMOptions{}, false }

func (r *readyAfterFirstLook) Template(sandbox.Spec, sandbox.VMOptions) (Template, bool) {
	return Template{}, false
}

// TestRuntimesReadyRightAfterRegistering: the runtimes change between the
// node's registration and its heartbeat loop's first look. The node
// record must come to offer microvm (it once kept runc alone forever,
// because the loop compared with its own first look, not with what was
// registered).
func TestRuntimesReadyRightAfterRegistering(t *testing.T) {
	env := newReportEnv(t)
	ctx := context.Background()
	cfg := fakeAgentConfig(t, env, t.TempDir())
	cfg.Runtimes, cfg.HeartbeatInterval = &readyAfterFirstLook{}, 20*time.Millisecond
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var last v1.NodeStatus
	waitFor(t, "the node record offers microvm", func() bool {
		n, err := env.st.Nodes().Get(ctx, env.st.Nodes().Key("n1"))
		if err != nil {
			return false
		}
		last = n.Status
		return slices.Contains(n.Status.Runtimes, v1.RuntimeMicroVM)
	})
	if last.Accelerator != "tcg" || last.GuestKernel != "ready" {
		t.Errorf("node status = %+v; want accelerator tcg, kernel ready", last)
	}
}
