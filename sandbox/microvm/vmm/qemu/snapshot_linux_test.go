package qemu

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSnapshotThroughQMP shows the driver fits snapshots (issue 8): a
// jailed QEMU can open no path and spawn nothing (so no "exec:" or file
// migration), but stop + getfd + migrate to "fd:" + cont over the kept
// QMP connection saves a running guest into a file the host opened, and
// the guest runs on afterwards.
func TestSnapshotThroughQMP(t *testing.T) {
	kernel := requireVM(t)
	cfg := testConfig(t, kernel, "hang")
	v := startVM(t, cfg)
	waitBoot(t, v)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q := v.QMP()
	if _, err := q.Execute(ctx, "stop", nil); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "state")
	f, err := os.OpenFile(snap, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := q.SendFile(ctx, "snap", f); err != nil {
		t.Fatalf("SendFile: %v", err)
	}
	if _, err := q.Execute(ctx, "migrate", map[string]string{"uri": "fd:snap"}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	for {
		ret, err := q.Execute(ctx, "query-migrate", nil)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Status string `json:"status"`
		}
		json.Unmarshal(ret, &m)
		if m.Status == "completed" {
			break
		}
		if m.Status == "failed" || m.Status == "cancelled" {
			t.Fatalf("migration %s: %s", m.Status, ret)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("migration still %s", m.Status)
		case <-time.After(20 * time.Millisecond): // QMP has no wait; the MIGRATION event needs a capability
		}
	}
	st, _ := os.Stat(snap)
	if st.Size() < 1<<20 {
		t.Errorf("snapshot is %d bytes; want the guest's memory", st.Size())
	}
	if _, err := q.Execute(ctx, "cont", nil); err != nil {
		t.Fatal(err)
	}
	s, err := q.QueryStatus(ctx)
	if err != nil || !s.Running {
		t.Errorf("after cont: %+v, %v; want running", s, err)
	}
	t.Logf("snapshot %d bytes", st.Size())
}
