package apiserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/store"
)

// testServer is an API server over a real embedded etcd, called in
// process through its handler.
type testServer struct {
	t     *testing.T
	st    *store.Store
	h     http.Handler
	token map[string]string // tenant → plaintext token
}

func newTestServer(t *testing.T, tenants ...string) *testServer {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := store.StartEmbedded(ctx, t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	imgs, err := image.NewLocalStore(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(e.Client)
	srv, err := New(Config{Listen: "127.0.0.1:0", Store: st, Images: imgs, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, st: st, h: srv.Handler(), token: map[string]string{}}
	for _, tn := range tenants {
		tok, err := st.CreateToken(ctx, store.Token{Tenant: tn, Role: store.RoleTenant})
		if err != nil {
			t.Fatal(err)
		}
		ts.token[tn] = tok
	}
	return ts
}

// get calls GET path as tenant and returns the status and body.
func (ts *testServer) get(tenant, path string) (int, []byte) {
	ts.t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Header.Set("Authorization", "Bearer "+ts.token[tenant])
	rec := httptest.NewRecorder()
	ts.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// list calls GET path as tenant and decodes the list; anything but 200
// fails the test.
func list[T any](ts *testServer, tenant, path string) v1.List[T] {
	ts.t.Helper()
	code, body := ts.get(tenant, path)
	if code != http.StatusOK {
		ts.t.Fatalf("GET %s = %d %s; want 200", path, code, body)
	}
	var out v1.List[T]
	if err := json.Unmarshal(body, &out); err != nil {
		ts.t.Fatalf("GET %s: %v", path, err)
	}
	return out
}

func (ts *testServer) createInstance(tenant, name string, labels map[string]string) {
	ts.t.Helper()
	insts := ts.st.Instances()
	in := &v1.Instance{APIVersion: v1.Version, Kind: "Instance", Metadata: v1.ObjectMeta{Name: name, Tenant: tenant, Labels: labels},
		Spec: v1.InstanceSpec{Containers: []v1.Container{{Name: "main", Image: "busybox"}}}, Status: v1.InstanceStatus{Phase: v1.PhasePending}}
	if err := insts.Create(context.Background(), insts.Key(tenant, name), in); err != nil {
		ts.t.Fatal(err)
	}
}

func instanceNames(items []*v1.Instance) []string {
	out := []string{}
	for _, in := range items {
		out = append(out, in.Metadata.Name)
	}
	return out
}

// pageAll follows continue from path (which has a limit) and returns every
// page; between the first and second page it calls between (if not nil).
func pageAll[T any](ts *testServer, tenant, path string, between func()) []v1.List[T] {
	ts.t.Helper()
	var pages []v1.List[T]
	next := path
	for {
		page := list[T](ts, tenant, next)
		pages = append(pages, page)
		if len(pages) == 1 && between != nil {
			between()
		}
		if page.Continue == "" {
			return pages
		}
		if len(pages) > 100 {
			ts.t.Fatalf("%s: more than 100 pages", path)
		}
		next = path + "&continue=" + url.QueryEscape(page.Continue)
	}
}

// TestListInstancesPaging pages through a tenant's instances: every item
// exactly once, in the unpaged order, all pages from the first page's
// snapshot (an instance created or deleted between pages changes
// nothing), the last page without continue; selectors still apply.
func TestListInstancesPaging(t *testing.T) {
	ts := newTestServer(t, "t1", "t2")
	var want, even []string
	for i := 0; i < 23; i++ {
		name := fmt.Sprintf("web-%02d", i)
		ts.createInstance("t1", name, map[string]string{"even": fmt.Sprint(i%2 == 0)})
		want = append(want, name)
		if i%2 == 0 {
			even = append(even, name)
		}
	}
	ts.createInstance("t2", "other", nil)

	all := list[*v1.Instance](ts, "t1", "/v1/instances")
	if got := instanceNames(all.Items); !reflect.DeepEqual(got, want) || all.Continue != "" {
		t.Fatalf("unpaged list = %v continue %q; want %v and no continue", got, all.Continue, want)
	}

	pages := pageAll[*v1.Instance](ts, "t1", "/v1/instances?limit=7", func() {
		ts.createInstance("t1", "web-05a", nil) // sorts inside a later page
		ts.createInstance("t1", "web-99", nil)  // sorts after every page
		insts := ts.st.Instances()
		if err := insts.Delete(context.Background(), insts.Key("t1", "web-20"), ""); err != nil {
			t.Fatal(err)
		}
	})
	var got []string
	var sizes []int
	for i, p := range pages {
		got = append(got, instanceNames(p.Items)...)
		sizes = append(sizes, len(p.Items))
		if p.ResourceVersion != pages[0].ResourceVersion {
			t.Errorf("page %d resourceVersion %s; want the first page's %s", i, p.ResourceVersion, pages[0].ResourceVersion)
		}
	}
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(sizes, []int{7, 7, 7, 2}) {
		t.Errorf("pages of 7 = %v (sizes %v); want %v in pages 7 7 7 2", got, sizes, want)
	}

	// Now web-05a and web-99 exist and web-20 is gone: a new list sees it.
	after := pageAll[*v1.Instance](ts, "t1", "/v1/instances?limit=100", nil)
	if n := len(after); n != 1 || len(after[0].Items) != 24 || after[0].Continue != "" {
		t.Errorf("limit=100 after the changes: %d pages, first with %d items; want one page of 24", n, len(after[0].Items))
	}

	// A selector filters each page (web-20 is gone by now).
	even = append(even[:10:10], even[11:]...)
	got = nil
	for _, p := range pageAll[*v1.Instance](ts, "t1", "/v1/instances?limit=4&labelSelector=even%3Dtrue", nil) {
		got = append(got, instanceNames(p.Items)...)
	}
	if !reflect.DeepEqual(got, even) {
		t.Errorf("paged labelSelector even=true = %v; want %v", got, even)
	}
}

// TestListImagesAndNodesPaging pages images (per tenant) and nodes (admin).
func TestListImagesAndNodesPaging(t *testing.T) {
	ts := newTestServer(t, "t1", AdminTenant)
	ctx := context.Background()
	imgs := ts.st.Images()
	var wantImages []string
	for i := 0; i < 5; i++ {
		ref := fmt.Sprintf("docker.io/library/app%d:latest", i)
		wantImages = append(wantImages, ref)
		rec := &v1.Image{APIVersion: v1.Version, Kind: "Image", Metadata: v1.ObjectMeta{Name: ref, Tenant: "t1"}, Digest: "sha256:00"}
		if err := imgs.Create(ctx, imgs.Key("t1", imageKey(ref)), rec); err != nil {
			t.Fatal(err)
		}
	}
	var gotImages []string
	for _, p := range pageAll[*v1.Image](ts, "t1", "/v1/images?limit=2", nil) {
		for _, img := range p.Items {
			gotImages = append(gotImages, img.Metadata.Name)
		}
	}
	if !reflect.DeepEqual(gotImages, wantImages) {
		t.Errorf("paged images = %v; want %v", gotImages, wantImages)
	}

	nodes := ts.st.Nodes()
	var wantNodes []string
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("n%d", i)
		wantNodes = append(wantNodes, name)
		n := &v1.Node{APIVersion: v1.Version, Kind: "Node", Metadata: v1.ObjectMeta{Name: name}}
		if err := nodes.Create(ctx, nodes.Key(name), n); err != nil {
			t.Fatal(err)
		}
	}
	// An instance bound to n1 shows in its allocation on the paged list too.
	insts := ts.st.Instances()
	in := &v1.Instance{Metadata: v1.ObjectMeta{Name: "x", Tenant: "t1"}, Spec: v1.InstanceSpec{Containers: []v1.Container{{Name: "main", Image: "busybox"}}},
		Status: v1.InstanceStatus{Phase: v1.PhaseRunning, Node: "n1"}}
	if err := insts.Create(ctx, insts.Key("t1", "x"), in); err != nil {
		t.Fatal(err)
	}
	var gotNodes []string
	for _, p := range pageAll[*v1.Node](ts, AdminTenant, "/v1/nodes?limit=2", nil) {
		for _, n := range p.Items {
			gotNodes = append(gotNodes, n.Metadata.Name)
			if want := map[bool]int{true: 1}[n.Metadata.Name == "n1"]; n.Status.Instances != want {
				t.Errorf("paged node %s holds %d instances; want %d", n.Metadata.Name, n.Status.Instances, want)
			}
		}
	}
	if !reflect.DeepEqual(gotNodes, wantNodes) {
		t.Errorf("paged nodes = %v; want %v", gotNodes, wantNodes)
	}
}

func tokenFor(rev int64, key string) string {
	b, _ := json.Marshal(map[string]any{"v": 1, "rev": rev, "key": key})
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestListPagingErrors: a bad limit or continue is 400 naming the
// parameter; a token that points into another tenant's (or another
// kind's) keys is 400; a compacted snapshot is 410 Expired.
func TestListPagingErrors(t *testing.T) {
	ts := newTestServer(t, "t1", "t2")
	for i := 0; i < 3; i++ {
		ts.createInstance("t1", fmt.Sprintf("a%d", i), nil)
		ts.createInstance("t2", fmt.Sprintf("b%d", i), nil)
	}
	first := list[*v1.Instance](ts, "t2", "/v1/instances?limit=1")
	if first.Continue == "" {
		t.Fatal("t2's first page of 1 has no continue token")
	}
	rev := first.ResourceVersion

	tests := []struct {
		name, path, want string
		code             int
	}{
		{"limit not a number", "/v1/instances?limit=ten", `limit "ten"`, 400},
		{"limit zero", "/v1/instances?limit=0", `limit "0"`, 400},
		{"limit negative", "/v1/images?limit=-3", `limit "-3"`, 400},
		{"continue not base64", "/v1/instances?continue=%21%21%21", "continue", 400},
		{"continue not json", "/v1/instances?continue=" + base64.RawURLEncoding.EncodeToString([]byte("nope")), "continue", 400},
		{"continue without revision", "/v1/instances?continue=" + tokenFor(0, "/cube/instances/t1/a1"), "continue", 400},
		{"another tenant's token", "/v1/instances?limit=1&continue=" + url.QueryEscape(first.Continue), "continue", 400},
		{"forged token into t2", "/v1/instances?continue=" + tokenFor(2, "/cube/instances/t2/b1"), "continue", 400},
		{"forged token into a longer tenant name", "/v1/instances?continue=" + tokenFor(2, "/cube/instances/t10/x"), "continue", 400},
		{"instances token on images", "/v1/images?continue=" + tokenFor(2, "/cube/instances/t1/a1"), "continue", 400},
		{"future revision", "/v1/instances?continue=" + tokenFor(1<<40, "/cube/instances/t1/a1"), "continue", 400},
		{"continue with watch", "/v1/instances?watch=true&continue=" + tokenFor(2, "/cube/instances/t1/a1"), "continue", 400},
	}
	for _, tt := range tests {
		code, body := ts.get("t1", tt.path)
		var eb v1.ErrorBody
		_ = json.Unmarshal(body, &eb)
		if code != tt.code || eb.Error.Code != "InvalidArgument" || !strings.Contains(eb.Error.Message, tt.want) {
			t.Errorf("%s: GET %s = %d %s; want %d InvalidArgument naming %s", tt.name, tt.path, code, body, tt.code, tt.want)
		}
	}

	// t2's own token still works: the refusals above were about t1.
	if next := list[*v1.Instance](ts, "t2", "/v1/instances?limit=1&continue="+url.QueryEscape(first.Continue)); instanceNames(next.Items)[0] != "b1" || next.ResourceVersion != rev {
		t.Errorf("t2's second page = %v at %s; want b1 at %s", instanceNames(next.Items), next.ResourceVersion, rev)
	}

	// Compact past the snapshot: the token has expired.
	ts.createInstance("t2", "b9", nil)
	ctx := context.Background()
	resp, err := ts.st.Client().Get(ctx, "/cube/none")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.st.Client().Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	code, body := ts.get("t2", "/v1/instances?limit=1&continue="+url.QueryEscape(first.Continue))
	var eb v1.ErrorBody
	_ = json.Unmarshal(body, &eb)
	if code != http.StatusGone || eb.Error.Code != "Expired" || !strings.Contains(eb.Error.Message, "the list changed too much; list again without continue") {
		t.Errorf("continue after compaction = %d %s; want 410 Expired saying to list again", code, body)
	}
}

// TestListEventsPaging pages a tenant's events instance by instance, in
// the order things happened, with a type filter applied while paging;
// another tenant's events never appear.
func TestListEventsPaging(t *testing.T) {
	ts := newTestServer(t, "t1", "t2")
	ctx := context.Background()
	evs := ts.st.Events()
	var want, warnings []string
	for _, tenant := range []string{"t1", "t2"} {
		for _, inst := range []string{"a", "b"} {
			for i := 0; i < 4; i++ {
				typ := v1.EventNormal
				if i%2 == 1 {
					typ = v1.EventWarning
				}
				seq := fmt.Sprintf("%016x-00", i+1)
				e := &v1.Event{APIVersion: v1.Version, Kind: "Event", Metadata: v1.ObjectMeta{Name: inst + "." + seq, Tenant: tenant},
					Instance: inst, Type: typ, Reason: "R", Message: "m", Time: time.Unix(int64(i), 0)}
				if err := evs.Create(ctx, evs.Key(tenant, inst, seq), e); err != nil {
					t.Fatal(err)
				}
				if tenant == "t1" {
					want = append(want, e.Metadata.Name)
					if typ == v1.EventWarning {
						warnings = append(warnings, e.Metadata.Name)
					}
				}
			}
		}
	}
	for path, wantNames := range map[string][]string{"/v1/events?limit=3": want, "/v1/events?limit=1&types=Warning": warnings} {
		var got []string
		for _, p := range pageAll[*v1.Event](ts, "t1", path, nil) {
			for _, e := range p.Items {
				if e.Metadata.Tenant != "t1" {
					t.Errorf("%s: event of tenant %s", path, e.Metadata.Tenant)
				}
				got = append(got, e.Metadata.Name)
			}
		}
		if !reflect.DeepEqual(got, wantNames) {
			t.Errorf("%s pages = %v; want %v", path, got, wantNames)
		}
	}
}
