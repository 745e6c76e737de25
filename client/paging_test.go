package client_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sync"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/internal/apitest"
	"github.com/cube-platform/cube/store"
)

// recorder remembers the query of every request and runs a hook before
// serving each.
type recorder struct {
	mu      sync.Mutex
	queries []string    // protected by mu
	before  func(n int) // protected by mu
}

// take returns the queries so far and forgets them.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queries
	r.queries = nil
	return q
}

func (r *recorder) setBefore(fn func(n int)) {
	r.mu.Lock()
	r.before = fn
	r.mu.Unlock()
}

// newServer runs the real API server over an embedded etcd and returns a
// client for tenant t1.
func newServer(t *testing.T, rec *recorder) (*client.Client, *store.Store) {
	t.Helper()
	st, h, tok := apitest.Server(t, "t1")
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.queries = append(rec.queries, r.URL.RawQuery)
		n, before := len(rec.queries), rec.before
		rec.mu.Unlock()
		if before != nil {
			before(n)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	return client.New(hs.URL, tok), st
}

// TestListPagesTransparently: List* return every item, by name, however
// many pages it takes, and start over when the snapshot expired midway.
func TestListPagesTransparently(t *testing.T) {
	ctx := context.Background()
	rec := &recorder{}
	c, st := newServer(t, rec)
	insts := st.Instances()
	var want []string
	for i := 0; i < 23; i++ {
		name := fmt.Sprintf("w%02d", i)
		want = append(want, name)
		in := &v1.Instance{Metadata: v1.ObjectMeta{Name: name, Tenant: "t1"}}
		if err := insts.Create(ctx, insts.Key("t1", name), in); err != nil {
			t.Fatal(err)
		}
	}

	list, err := c.ListInstances(ctx, client.ListOptions{Limit: 7})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range list.Items {
		got = append(got, in.Metadata.Name)
	}
	if !reflect.DeepEqual(got, want) || list.Continue != "" || list.ResourceVersion == "" {
		t.Errorf("ListInstances(limit 7) = %v (continue %q, rv %q); want %v, no continue, a resourceVersion", got, list.Continue, list.ResourceVersion, want)
	}
	if q := rec.take(); len(q) != 4 || q[0] != "limit=7" {
		t.Errorf("ListInstances(limit 7) sent %q; want 4 requests, the first limit=7", q)
	}

	// Default page size.
	if list, err := c.ListInstances(ctx, client.ListOptions{}); err != nil || len(list.Items) != 23 {
		t.Fatalf("ListInstances() = %v, %v; want 23 items", list, err)
	}
	if q := rec.take(); len(q) != 1 || q[0] != fmt.Sprintf("limit=%d", client.DefaultPageSize) {
		t.Errorf("ListInstances() sent %q; want one request with limit=%d", q, client.DefaultPageSize)
	}

	// Etcd compacts the snapshot after the first page: the server answers
	// 410 and the client lists again from the start, once.
	rec.setBefore(func(n int) {
		if n != 2 {
			return
		}
		resp, err := st.Client().Put(ctx, "/cube/test-bump", "x")
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := st.Client().Compact(ctx, resp.Header.Revision); err != nil {
			t.Error(err)
		}
	})
	list, err = c.ListInstances(ctx, client.ListOptions{Limit: 10})
	rec.setBefore(nil)
	if err != nil || len(list.Items) != 23 {
		t.Fatalf("ListInstances across a compaction = %v, %v; want 23 items", list, err)
	}
	if q := rec.take(); len(q) != 5 {
		t.Errorf("ListInstances across a compaction sent %q; want 2 (the second expired) + 3 requests", q)
	}

	// Images come back by name although their keys (escaped references)
	// sort otherwise.
	imgs := st.Images()
	for _, ref := range []string{"example.com/a/b:1", "example.com/a-b:1", "example.com/a:1"} {
		rec := &v1.Image{Metadata: v1.ObjectMeta{Name: ref, Tenant: "t1"}, Digest: "sha256:00"}
		if err := imgs.Create(ctx, imgs.Key("t1", url.PathEscape(ref)), rec); err != nil {
			t.Fatal(err)
		}
	}
	il, err := c.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, img := range il.Items {
		refs = append(refs, img.Metadata.Name)
	}
	if want := []string{"example.com/a-b:1", "example.com/a/b:1", "example.com/a:1"}; !reflect.DeepEqual(refs, want) {
		t.Errorf("ListImages = %v; want %v", refs, want)
	}
}
