package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/internal/asuser"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func newTestStore(t *testing.T) *Store {
	t.Helper()
	e, err := StartEmbedded(context.Background(), t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return New(e.Client)
}

func TestCollectionCRUD(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	insts := s.Instances()
	key := insts.Key("t1", "web")
	events := insts.Watch(ctx, insts.Prefix("t1"), 0)

	in := &v1.Instance{Metadata: v1.ObjectMeta{Name: "web", Tenant: "t1"}}
	if err := insts.Create(ctx, key, in); err != nil {
		t.Fatal(err)
	}
	if err := insts.Create(ctx, key, &v1.Instance{}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second Create = %v; want ErrAlreadyExists", err)
	}
	got, err := insts.Get(ctx, key)
	if err != nil || got.Metadata.ResourceVersion != in.Metadata.ResourceVersion {
		t.Fatalf("Get = %+v, %v; want resourceVersion %s", got.Metadata, err, in.Metadata.ResourceVersion)
	}
	stale := *got
	got.Status.Phase = v1.PhaseRunning
	if err := insts.Update(ctx, key, got); err != nil {
		t.Fatal(err)
	}
	stale.Status.Phase = v1.PhaseFailed
	if err := insts.Update(ctx, key, &stale); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("stale Update = %v; want ErrConflict", err)
	}
	if _, err := insts.Mutate(ctx, key, func(in *v1.Instance) error { in.Status.IP = "10.0.0.2"; return nil }); err != nil {
		t.Fatal(err)
	}
	list, _, err := insts.List(ctx, insts.Prefix("t1"))
	if err != nil || len(list) != 1 || list[0].Status.IP != "10.0.0.2" || list[0].Status.Phase != v1.PhaseRunning {
		t.Fatalf("List = %v, %v; want one Running instance with IP 10.0.0.2", list, err)
	}
	if other, _, _ := insts.List(ctx, insts.Prefix("t2")); len(other) != 0 {
		t.Errorf("tenant t2 sees %d instances; want 0", len(other))
	}
	if err := insts.Delete(ctx, key, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := insts.Get(ctx, key); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get after Delete = %v; want ErrNotFound", err)
	}
	want := []v1.EventType{v1.EventAdded, v1.EventModified, v1.EventModified, v1.EventDeleted}
	for i, w := range want {
		select {
		case ev := <-events:
			if ev.Type != w || ev.Object.Metadata.Name != "web" {
				t.Errorf("event %d = %s %s; want %s web", i, ev.Type, ev.Object.Metadata.Name, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d (%s) never came", i, w)
		}
	}
}

func TestTokensAreHashed(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	plain, err := s.CreateToken(ctx, Token{Tenant: "t1", Role: RoleTenant})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.Client().Get(ctx, "/cube/tokens/", withPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if string(kv.Key) == plain || string(kv.Value) == plain || containsBytes(kv.Key, plain) || containsBytes(kv.Value, plain) {
			t.Fatal("the plaintext token is stored in etcd")
		}
	}
	tok, err := s.LookupToken(ctx, plain)
	if err != nil || tok.Tenant != "t1" {
		t.Fatalf("LookupToken = %+v, %v; want tenant t1", tok, err)
	}
	if _, err := s.LookupToken(ctx, plain+"x"); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("LookupToken(bad) = %v; want ErrUnauthorized", err)
	}
}

func TestHeartbeatLease(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	id, err := s.Heartbeat(ctx, "n1", 2*time.Second, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if id2, err := s.Heartbeat(ctx, "n1", 2*time.Second, id, time.Now()); err != nil || id2 != id {
		t.Fatalf("renewal = %d, %v; want the same lease %d", id2, err, id)
	}
	alive, _ := s.AliveNodes(ctx)
	if _, ok := alive["n1"]; !ok {
		t.Fatal("n1 is not alive after a heartbeat")
	}
	// Without beats the lease expires (etcd's minimum TTL is a few seconds).
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		alive, _ = s.AliveNodes(ctx)
		if _, ok := alive["n1"]; !ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("n1 is still alive 15s after its last heartbeat")
}

// TestEmbeddedOpensNoTCPPort: every local user can reach a loopback TCP
// port, so the embedded member must open none; its socket is root's only.
func TestEmbeddedOpensNoTCPPort(t *testing.T) {
	before, err := asuser.TCPListeners(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "etcd")
	e, err := StartEmbedded(context.Background(), dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	after, err := asuser.TCPListeners(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("TCP listeners before StartEmbedded %v, after %v; want no new one", before, after)
	}
	sock := filepath.Join(dir, SocketName)
	for path, want := range map[string]os.FileMode{dir: 0o700, sock: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %o; want %o", path, got, want)
		}
	}
	// The socket works for root (a positive control), and not for nobody.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.Get(ctx, "/cube/tenants/"); err != nil {
		t.Fatalf("root through %s: %v", sock, err)
	}
	asuser.RequireRoot(t)
	err = asuser.Do(asuser.Nobody, func() error {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("nobody dialing %s: err = %v; want permission denied", sock, err)
	}
}

// TestEmbeddedClientSurvivesWatchChurn: many watches ending at once while
// events arrive (a tenant's 32 streams cut together, say) must not stall
// the client. etcd's in-process v3client deadlocked here at 24 watches.
func TestEmbeddedClientSurvivesWatchChurn(t *testing.T) {
	e, err := StartEmbedded(context.Background(), t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for round := 0; round < 5; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for i := 0; i < 48; i++ {
			wch := e.Client.Watch(ctx, "/churn/", clientv3.WithPrefix())
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range wch {
				}
			}()
		}
		for i := 0; i < 20; i++ {
			if _, err := e.Client.Put(context.Background(), fmt.Sprintf("/churn/%d", i), "v"); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: 48 watches did not end 20s after their context was canceled", round)
		}
	}
	// And the client still serves.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.Client.Get(ctx, "/churn/0"); err != nil {
		t.Fatalf("Get after the churn: %v", err)
	}
}
