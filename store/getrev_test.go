package store

import (
	"context"
	"errors"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
)

// TestGetWithRevision: the revision is the store's at the read (past the
// object's own when other keys moved on), and a watch from it sees the
// next change of the object and nothing before it.
func TestGetWithRevision(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	insts := s.Instances()
	key := insts.Key("t1", "web")
	if err := insts.Create(ctx, key, &v1.Instance{Metadata: v1.ObjectMeta{Name: "web", Tenant: "t1"}}); err != nil {
		t.Fatal(err)
	}
	if err := insts.Create(ctx, insts.Key("t1", "other"), &v1.Instance{Metadata: v1.ObjectMeta{Name: "other", Tenant: "t1"}}); err != nil {
		t.Fatal(err)
	}
	got, rev, err := insts.GetWithRevision(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	own, _ := v1.ParseResourceVersion(got.Metadata.ResourceVersion)
	if rev <= own {
		t.Fatalf("revision of the read %d; want past the object's own %d (another key was written after it)", rev, own)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	events := insts.Watch(wctx, key, rev)
	if _, err := insts.Mutate(ctx, key, func(in *v1.Instance) error { in.Metadata.Labels = map[string]string{"a": "b"}; return nil }); err != nil {
		t.Fatal(err)
	}
	ev, ok := <-events
	if !ok || ev.Type != v1.EventModified || ev.Object.Metadata.Labels["a"] != "b" {
		t.Fatalf("first event %+v (open %v); want the modification after the read", ev, ok)
	}
	if _, _, err := insts.GetWithRevision(ctx, insts.Key("t1", "none")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetWithRevision of a missing key: %v; want ErrNotFound", err)
	}
}
