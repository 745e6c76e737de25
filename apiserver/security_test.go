package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/store"
)

// secServer is the real API server over a real embedded etcd, with a clock
// the test moves and an admin token, for the misuse tests: each test makes
// the misuse for real through the handler and reads the answer.
type secServer struct {
	t     testing.TB
	st    *store.Store
	srv   *Server
	admin string
	mu    sync.Mutex
	now   time.Time // protected by mu
}

func newSecServer(t testing.TB, edit func(*Config)) *secServer {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := store.StartEmbedded(ctx, t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return newSecServerOn(t, store.New(e.Client), edit)
}

func newSecServerOn(t testing.TB, st *store.Store, edit func(*Config)) *secServer {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	imgs, err := image.NewLocalStore(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	ss := &secServer{t: t, st: st, now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	cfg := Config{Listen: "127.0.0.1:0", Store: st, Images: imgs, Log: log, Now: ss.clock}
	if edit != nil {
		edit(&cfg)
	}
	if ss.srv, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureTenant(ctx, AdminTenant, ss.clock()); err != nil {
		t.Fatal(err)
	}
	if ss.admin, err = st.CreateToken(ctx, store.Token{Tenant: AdminTenant, Role: store.RoleTenant}); err != nil {
		t.Fatal(err)
	}
	return ss
}

func (ss *secServer) clock() time.Time {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.now
}

func (ss *secServer) advance(d time.Duration) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.now = ss.now.Add(d)
}

// reply is an answer: its status, the error it carried, the raw body.
type reply struct {
	code int
	err  v1.ErrorDetail
	body []byte
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.code, bytes.TrimSpace(r.body)) }

// do sends method path with token and body (a []byte as is, anything else
// as JSON).
func (ss *secServer) do(token, method, path string, body any) reply {
	ss.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			ss.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req := httptest.NewRequest(method, path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	ss.srv.Handler().ServeHTTP(rec, req)
	out := reply{code: rec.Code, body: rec.Body.Bytes()}
	if rec.Code >= 400 {
		var eb v1.ErrorBody
		_ = json.Unmarshal(out.body, &eb)
		out.err = eb.Error
	}
	return out
}

// must fails the test unless the answer has status want.
func (ss *secServer) must(want int, token, method, path string, body any) reply {
	ss.t.Helper()
	r := ss.do(token, method, path, body)
	if r.code != want {
		ss.t.Fatalf("%s %s = %s; want %d", method, path, r, want)
	}
	return r
}

// tenant makes a tenant through the admin API and returns its token.
func (ss *secServer) tenant(req v1.TenantRequest) string {
	ss.t.Helper()
	var tt v1.TenantToken
	r := ss.must(http.StatusCreated, ss.admin, "POST", "/v1/tenants", req)
	if err := json.Unmarshal(r.body, &tt); err != nil || tt.Token == "" {
		ss.t.Fatalf("tenant create answered %s; want a token", r)
	}
	ss.image(req.Name)
	return tt.Token
}

// image records busybox for tenant, as an import would.
func (ss *secServer) image(tenant string) {
	ss.t.Helper()
	ref, _ := image.NormalizeRef("busybox")
	imgs := ss.st.Images()
	rec := &v1.Image{Metadata: v1.ObjectMeta{Name: ref, Tenant: tenant}, Digest: "sha256:" + strings.Repeat("0", 64)}
	if err := imgs.Create(context.Background(), imgs.Key(tenant, imageKey(ref)), rec); err != nil {
		ss.t.Fatal(err)
	}
}

func inst(name string, edit func(*v1.Instance)) *v1.Instance {
	in := &v1.Instance{Metadata: v1.ObjectMeta{Name: name},
		Spec: v1.InstanceSpec{Containers: []v1.Container{{Image: "busybox", Resources: v1.Resources{CPU: "10m", Memory: "4Mi"}}}}}
	if edit != nil {
		edit(in)
	}
	return in
}

func wantRefusal(t *testing.T, r reply, code int, field, msg string) {
	t.Helper()
	if r.code != code || r.err.Field != field || !strings.Contains(r.err.Message, msg) {
		t.Errorf("answer %s (field %q); want %d, field %q, message containing %q", r, r.err.Field, code, field, msg)
	}
}

// TestPolicyGrants: a tenant's instance at priority system, or tolerating a
// taint, is refused with 403 naming the missing grant until the admin
// grants it; the admin tenant has every grant.
func TestPolicyGrants(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	ss.image(AdminTenant)
	sys := inst("sys", func(in *v1.Instance) { in.Spec.Priority = v1.PrioritySystem })
	gpu := inst("gpu", func(in *v1.Instance) {
		in.Spec.Tolerations = []v1.Toleration{{Key: "gpu", Operator: "Exists"}}
	})
	any := inst("any", func(in *v1.Instance) { in.Spec.Tolerations = []v1.Toleration{{Operator: "Exists"}} })

	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", sys), 403, "spec.priority",
		`priority "system" is not granted to tenant acme: ask the admin for `+"`cube tenant update acme --allow-priority system`")
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", gpu), 403, "spec.tolerations[0].key",
		"`cube tenant update acme --allow-toleration gpu`")
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", any), 403, "spec.tolerations[0].key", "--allow-toleration '*'")
	// Positive control: the same specs pass for the admin tenant.
	for _, in := range []*v1.Instance{sys, gpu, any} {
		ss.must(http.StatusOK, ss.admin, "POST", "/v1/instances?dryRun=true", in)
	}

	ss.must(http.StatusOK, ss.admin, "PATCH", "/v1/tenants/acme", v1.TenantUpdate{AllowPriorities: []string{"system"}, AllowTolerations: []string{"gpu"}})
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", sys)
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", gpu)
	// gpu does not grant every key.
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", any), 403, "spec.tolerations[0].key", "not granted")

	// Withdrawn, the grant no longer admits.
	ss.must(http.StatusOK, ss.admin, "PATCH", "/v1/tenants/acme", v1.TenantUpdate{DenyPriorities: []string{"system"}})
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", inst("sys2", func(in *v1.Instance) { in.Spec.Priority = "system" })), 403, "spec.priority", "not granted")
}

// TestTenantCreateTwiceKeepsQuotas: a second create of a tenant is 409 and
// leaves its quotas and grants; a new token keeps them too; update
// changes only what it names.
func TestTenantCreateTwiceKeepsQuotas(t *testing.T) {
	ss := newSecServer(t, nil)
	quota := map[string]v1.Quota{"batch": {CPU: "2", Instances: 3}}
	ss.tenant(v1.TenantRequest{Name: "acme", Weight: 2, Quotas: quota, AllowPriorities: []string{"system"}, MaxInstances: 7})
	want := v1.TenantSpec{Weight: 2, Quotas: quota, AllowPriorities: []string{"system"}, MaxInstances: 7}
	check := func(when string) {
		t.Helper()
		var got v1.Tenant
		_ = json.Unmarshal(ss.must(http.StatusOK, ss.admin, "GET", "/v1/tenants/acme", nil).body, &got)
		if fmt.Sprint(got.Spec) != fmt.Sprint(want) {
			t.Errorf("%s: tenant spec %+v; want %+v", when, got.Spec, want)
		}
	}
	r := ss.do(ss.admin, "POST", "/v1/tenants", v1.TenantRequest{Name: "acme"})
	wantRefusal(t, r, http.StatusConflict, "", "`cube tenant update acme`")
	check("after a second create")
	ss.must(http.StatusCreated, ss.admin, "POST", "/v1/tokens", v1.TokenRequest{Tenant: "acme"})
	check("after a new token")
	ss.must(http.StatusOK, ss.admin, "PATCH", "/v1/tenants/acme", v1.TenantUpdate{AllowTolerations: []string{"gpu"}})
	want.AllowTolerations = []string{"gpu"}
	check("after an update of tolerations only")
}

// tokenID returns the ID of a plaintext token, as the server reports it.
func (ss *secServer) tokenID(plain string) string {
	ss.t.Helper()
	tok, err := ss.st.LookupToken(context.Background(), plain)
	if err != nil {
		ss.t.Fatal(err)
	}
	return tok.ID
}

// TestRevokedTokenFailsNextRequest: a revoked token is refused on the
// very next request, whoever revoked it (the admin, or its tenant).
func TestRevokedTokenFailsNextRequest(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	ss.must(http.StatusOK, acme, "GET", "/v1/instances", nil)
	var list v1.List[*v1.Token]
	_ = json.Unmarshal(ss.must(http.StatusOK, ss.admin, "GET", "/v1/tokens?tenant=acme", nil).body, &list)
	id := ss.tokenID(acme)
	if len(list.Items) != 1 || list.Items[0].Metadata.Name != id || list.Items[0].Token != "" || list.Items[0].Scope != "tenant" {
		t.Fatalf("token ls = %s; want one tenant token %s without its secret", ss.do(ss.admin, "GET", "/v1/tokens?tenant=acme", nil), id)
	}
	if strings.Contains(string(ss.do(ss.admin, "GET", "/v1/tokens", nil).body), strings.TrimPrefix(acme, "cube_")) {
		t.Fatalf("token ls shows a secret")
	}
	ss.must(http.StatusNoContent, ss.admin, "DELETE", "/v1/tokens/"+id, nil)
	wantRefusal(t, ss.do(acme, "GET", "/v1/instances", nil), http.StatusUnauthorized, "", "revoked")

	// A tenant revokes its own second token; the first is unaffected.
	var tok v1.Token
	_ = json.Unmarshal(ss.must(http.StatusCreated, ss.admin, "POST", "/v1/tokens", v1.TokenRequest{Tenant: "acme"}).body, &tok)
	var tok2 v1.Token
	_ = json.Unmarshal(ss.must(http.StatusCreated, tok.Token, "POST", "/v1/tokens", v1.TokenRequest{}).body, &tok2)
	ss.must(http.StatusOK, tok2.Token, "GET", "/v1/instances", nil)
	ss.must(http.StatusNoContent, tok.Token, "DELETE", "/v1/tokens/"+tok2.Metadata.Name, nil)
	wantRefusal(t, ss.do(tok2.Token, "GET", "/v1/instances", nil), http.StatusUnauthorized, "", "not valid")
	ss.must(http.StatusOK, tok.Token, "GET", "/v1/instances", nil)
}

// TestExpiredToken401: past its expiry a token gets 401 saying so.
func TestExpiredToken401(t *testing.T) {
	ss := newSecServer(t, nil)
	ss.tenant(v1.TenantRequest{Name: "acme"})
	var tok v1.Token
	_ = json.Unmarshal(ss.must(http.StatusCreated, ss.admin, "POST", "/v1/tokens", v1.TokenRequest{Tenant: "acme", TTL: "1h"}).body, &tok)
	if tok.Expires == nil || !tok.Expires.Equal(ss.clock().Add(time.Hour)) {
		t.Fatalf("token expires %v; want in 1h", tok.Expires)
	}
	ss.must(http.StatusOK, tok.Token, "GET", "/v1/instances", nil)
	ss.advance(time.Hour)
	wantRefusal(t, ss.do(tok.Token, "GET", "/v1/instances", nil), http.StatusUnauthorized, "", "token "+tok.Metadata.Name+" expired at")
	// The default lifetime is a year; 0 never expires.
	var def, never v1.Token
	_ = json.Unmarshal(ss.must(http.StatusCreated, ss.admin, "POST", "/v1/tokens", v1.TokenRequest{Tenant: "acme"}).body, &def)
	_ = json.Unmarshal(ss.must(http.StatusCreated, ss.admin, "POST", "/v1/tokens", v1.TokenRequest{Tenant: "acme", TTL: "0"}).body, &never)
	if def.Expires == nil || !def.Expires.Equal(ss.clock().Add(v1.DefaultTokenTTL)) || never.Expires != nil {
		t.Errorf("expiry of a default token %v, of ttl 0 %v; want in a year, and never", def.Expires, never.Expires)
	}
	ss.advance(10 * v1.DefaultTokenTTL)
	ss.must(http.StatusOK, never.Token, "GET", "/v1/instances", nil)
}

// TestReadOnlyToken: a read-only token reads, and every write is 403.
func TestReadOnlyToken(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("web", nil))
	var ro v1.Token
	_ = json.Unmarshal(ss.must(http.StatusCreated, acme, "POST", "/v1/tokens", v1.TokenRequest{Scope: "read-only"}).body, &ro)
	ss.must(http.StatusOK, ro.Token, "GET", "/v1/instances/web", nil)
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/instances", inst("other", nil)},
		{"DELETE", "/v1/instances/web?force=true", nil},
		{"POST", "/v1/tokens", v1.TokenRequest{}},
		{"DELETE", "/v1/tokens/" + ss.tokenID(acme), nil},
		{"POST", "/v1/images/pull", v1.PullRequest{Image: "127.0.0.1:1/x"}},
		{"POST", "/v1/instances/web/exec", v1.ExecRequest{Command: []string{"sh"}}},
	} {
		wantRefusal(t, ss.do(ro.Token, c.method, c.path, c.body), http.StatusForbidden, "", "read-only")
	}
	ss.must(http.StatusOK, acme, "GET", "/v1/instances/web", nil) // still there
}

// TestNonAdminCannotManage: tenant tokens (and the admin tenant's tokens
// of scope tenant) cannot manage tenants, nor tokens of others.
func TestNonAdminCannotManage(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	ss.tenant(v1.TenantRequest{Name: "other"})
	var adminTenantScope v1.Token
	_ = json.Unmarshal(ss.must(http.StatusCreated, ss.admin, "POST", "/v1/tokens", v1.TokenRequest{Scope: "tenant"}).body, &adminTenantScope)
	for _, tok := range []string{acme, adminTenantScope.Token} {
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{"POST", "/v1/tenants", v1.TenantRequest{Name: "evil"}},
			{"PATCH", "/v1/tenants/acme", v1.TenantUpdate{AllowPriorities: []string{"system"}}},
			{"GET", "/v1/tenants", nil},
			{"DELETE", "/v1/tenants/other", nil},
			{"POST", "/v1/tokens", v1.TokenRequest{Tenant: "other"}},
			{"POST", "/v1/tokens", v1.TokenRequest{Scope: "admin"}},
			{"GET", "/v1/tokens?tenant=other", nil},
		} {
			if r := ss.do(tok, c.method, c.path, c.body); r.code != http.StatusForbidden && !(c.body == (v1.TokenRequest{Scope: "admin"}) && r.code == 422) {
				t.Errorf("%s %s by a non-admin token = %s; want 403", c.method, c.path, r)
			}
		}
	}
	// Another tenant's token ID is the same 404 as none.
	wantRefusal(t, ss.do(acme, "DELETE", "/v1/tokens/"+ss.tokenID(ss.admin), nil), http.StatusNotFound, "", "not found")
	wantRefusal(t, ss.do(acme, "GET", "/v1/tenants/other", nil), http.StatusNotFound, "", "not found")
	// A tenant reads its own record (its grants), and nothing changed.
	ss.must(http.StatusOK, acme, "GET", "/v1/tenants/acme", nil)
	ss.must(http.StatusNotFound, ss.admin, "GET", "/v1/tenants/evil", nil)
	ss.must(http.StatusOK, ss.admin, "GET", "/v1/tenants/other", nil)
}

// TestTenantRm: rm refuses while the tenant has instances, --force deletes
// them, and the tenant's tokens stop working at once.
func TestTenantRm(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("web", nil))
	wantRefusal(t, ss.do(ss.admin, "DELETE", "/v1/tenants/acme", nil), http.StatusConflict, "", "--force")
	ss.must(http.StatusOK, acme, "GET", "/v1/instances/web", nil)
	ss.must(http.StatusNoContent, ss.admin, "DELETE", "/v1/tenants/acme?force=true", nil)
	wantRefusal(t, ss.do(acme, "GET", "/v1/instances", nil), http.StatusUnauthorized, "", "not valid")
	if items, _, _ := ss.st.Instances().List(context.Background(), ss.st.Instances().Prefix("acme")); len(items) != 0 {
		t.Errorf("after rm --force acme has %d instances; want 0", len(items))
	}
	ss.must(http.StatusNotFound, ss.admin, "GET", "/v1/tenants/acme", nil)
	wantRefusal(t, ss.do(ss.admin, "DELETE", "/v1/tenants/admin", nil), http.StatusForbidden, "", "cannot be removed")
}

// TestBodyLimits: bodies over an endpoint's limit are 413, and one just
// under it is read (a positive control).
func TestBodyLimits(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	pad := func(n int) []byte { // a JSON object of n bytes
		return []byte(`{"metadata":{"name":"x","labels":{"a":"` + strings.Repeat("b", n-43) + `"}}}`)
	}
	for _, c := range []struct {
		token, path string
		limit       int
	}{
		{acme, "/v1/instances", maxBody},
		{ss.admin, "/v1/tenants", maxSmallBody},
		{acme, "/v1/tokens", maxSmallBody},
	} {
		wantRefusal(t, ss.do(c.token, "POST", c.path, pad(c.limit+1)), http.StatusRequestEntityTooLarge, "", "larger than this endpoint's limit")
		if r := ss.do(c.token, "POST", c.path, pad(c.limit)); r.code == http.StatusRequestEntityTooLarge {
			t.Errorf("POST %s of exactly its limit = %s; want it read", c.path, r)
		}
	}
}

// TestInstanceBounds: counts and sizes over the caps, NUL bytes and bad
// working directories are 422 naming the field.
func TestInstanceBounds(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	many := func(n int, f func(i int, in *v1.Instance)) func(*v1.Instance) {
		return func(in *v1.Instance) {
			for i := 0; i < n; i++ {
				f(i, in)
			}
		}
	}
	c0 := func(in *v1.Instance) *v1.Container { return &in.Spec.Containers[0] }
	for _, c := range []struct {
		name, field string
		edit        func(*v1.Instance)
	}{
		{"17 containers", "spec.containers", many(16, func(i int, in *v1.Instance) {
			in.Spec.Containers = append(in.Spec.Containers, v1.Container{Name: fmt.Sprintf("c%d", i), Image: "busybox"})
		})},
		{"257 env vars", "spec.containers[0].env", many(257, func(i int, in *v1.Instance) {
			c0(in).Env = append(c0(in).Env, v1.EnvVar{Name: fmt.Sprintf("V%d", i)})
		})},
		{"an env value of 33 KiB", "spec.containers[0].env[0].value", func(in *v1.Instance) {
			c0(in).Env = []v1.EnvVar{{Name: "A", Value: strings.Repeat("x", 33<<10)}}
		}},
		{"129 KiB of env", "spec.containers[0].env", many(5, func(i int, in *v1.Instance) {
			c0(in).Env = append(c0(in).Env, v1.EnvVar{Name: fmt.Sprintf("V%d", i), Value: strings.Repeat("x", 26<<10)})
		})},
		{"1025 args", "spec.containers[0].args", many(1025, func(i int, in *v1.Instance) { c0(in).Args = append(c0(in).Args, "x") })},
		{"65 ports", "spec.containers[0].ports", many(65, func(i int, in *v1.Instance) {
			c0(in).Ports = append(c0(in).Ports, v1.ContainerPort{ContainerPort: 1000 + i})
		})},
		{"65 labels", "metadata.labels", many(65, func(i int, in *v1.Instance) {
			if in.Metadata.Labels == nil {
				in.Metadata.Labels = map[string]string{}
			}
			in.Metadata.Labels[fmt.Sprintf("l%d", i)] = "v"
		})},
		{"NUL in an env value", "spec.containers[0].env[0].value", func(in *v1.Instance) { c0(in).Env = []v1.EnvVar{{Name: "A", Value: "a\x00b"}} }},
		{"NUL in an arg", "spec.containers[0].args[1]", func(in *v1.Instance) { c0(in).Args = []string{"ok", "sh\x00"} }},
		{"NUL in the image", "spec.containers[0].image", func(in *v1.Instance) { c0(in).Image = "busybox\x00" }},
		{"NUL in a label value", "metadata.labels.app", func(in *v1.Instance) { in.Metadata.Labels = map[string]string{"app": "\x00"} }},
		{"relative workingDir", "spec.containers[0].workingDir", func(in *v1.Instance) { c0(in).WorkingDir = "app" }},
		{"unclean workingDir", "spec.containers[0].workingDir", func(in *v1.Instance) { c0(in).WorkingDir = "/app/../proc/1" }},
		{"workingDir /proc", "spec.containers[0].workingDir", func(in *v1.Instance) { c0(in).WorkingDir = "/proc" }},
		{"workingDir under /proc", "spec.containers[0].workingDir", func(in *v1.Instance) { c0(in).WorkingDir = "/proc/self/root" }},
	} {
		r := ss.do(acme, "POST", "/v1/instances", inst("x", c.edit))
		if r.code != http.StatusUnprocessableEntity || r.err.Field != c.field {
			t.Errorf("%s: answer %.300s (field %q); want 422 naming %s", c.name, r, r.err.Field, c.field)
		}
	}
	// Positive controls: at the caps, and a clean absolute workingDir.
	for _, edit := range []func(*v1.Instance){
		many(256, func(i int, in *v1.Instance) { c0(in).Env = append(c0(in).Env, v1.EnvVar{Name: fmt.Sprintf("V%d", i)}) }),
		many(64, func(i int, in *v1.Instance) {
			c0(in).Ports = append(c0(in).Ports, v1.ContainerPort{ContainerPort: 1000 + i})
		}),
		func(in *v1.Instance) { c0(in).WorkingDir = "/srv/app" },
		func(in *v1.Instance) { c0(in).WorkingDir = "/procfs" },
	} {
		ss.must(http.StatusOK, acme, "POST", "/v1/instances?dryRun=true", inst("x", edit))
	}
}

// TestObjectQuotaCountsPending: the per-tenant object bound counts every
// stored instance, Pending ones included (nothing is scheduled here).
func TestObjectQuotaCountsPending(t *testing.T) {
	ss := newSecServer(t, func(c *Config) { c.MaxInstances = 3 })
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	big := ss.tenant(v1.TenantRequest{Name: "big", MaxInstances: 5})
	for i := 0; i < 3; i++ {
		ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst(fmt.Sprintf("p%d", i), nil))
	}
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", inst("p3", nil)), http.StatusTooManyRequests, "", "tenant acme has 3 instances, its bound")
	for i := 0; i < 5; i++ { // its own bound, not the default
		ss.must(http.StatusCreated, big, "POST", "/v1/instances", inst(fmt.Sprintf("p%d", i), nil))
	}
	ss.must(http.StatusTooManyRequests, big, "POST", "/v1/instances", inst("p5", nil))
	// A removal makes room again.
	ss.must(http.StatusOK, acme, "DELETE", "/v1/instances/p0", nil)
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("p3", nil))
}

// TestStreamCap: a tenant's 33rd concurrent watch is 429 while another
// tenant's watch still works; ending one frees its slot.
func TestStreamCap(t *testing.T) {
	_, cli := startEtcd(t, 0)
	ss := newSecServerOn(t, store.New(cli), nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	other := ss.tenant(v1.TenantRequest{Name: "other"})
	hs := httptest.NewServer(ss.srv.Handler())
	t.Cleanup(hs.Close)
	open := func(token, path string) (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, func() { cancel(); resp.Body.Close() }
	}
	paths := []string{"/v1/instances?watch=true", "/v1/events?watch=true"}
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for i := 0; i < DefaultMaxStreams; i++ {
		resp, cancel := open(acme, paths[i%2])
		cancels = append(cancels, cancel)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("watch %d = %d; want 200", i+1, resp.StatusCode)
		}
	}
	for _, p := range append(paths, "/v1/instances/none/wait?state=running", "/v1/instances/none/logs?follow=true") {
		resp, cancel := open(acme, p)
		body, _ := io.ReadAll(resp.Body)
		cancel()
		if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "32 watches, waits, log follows and exec sessions open") {
			t.Errorf("acme's 33rd stream %s = %d %s; want 429", p, resp.StatusCode, body)
		}
	}
	resp, cancel := open(other, paths[0])
	cancel()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("other tenant's watch = %d; want 200 (the cap is per tenant)", resp.StatusCode)
	}
	// End one of acme's: its slot is released when the stream ends.
	cancels[0]()
	deadline := time.Now().Add(10 * time.Second)
	for ss.srv.streams.openStreams("acme") != DefaultMaxStreams-1 {
		if time.Now().After(deadline) {
			t.Fatalf("acme holds %d streams 10s after one ended; want %d", ss.srv.streams.openStreams("acme"), DefaultMaxStreams-1)
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, c2 := open(acme, paths[0])
	cancels = append(cancels, c2)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("acme's watch after one ended = %d; want 200", resp.StatusCode)
	}
}

// TestHostPortPolicy: a tenant's host port below 1024 is 403, one in the
// ephemeral range or one the platform uses is 422, all naming the field;
// the admin tenant may publish port 80.
func TestHostPortPolicy(t *testing.T) {
	ss := newSecServer(t, func(c *Config) {
		c.EphemeralPorts = [2]int{40000, 50000}
		c.ReservedPorts = []int{7443}
	})
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	ss.image(AdminTenant)
	port := func(n int) *v1.Instance {
		return inst("web", func(in *v1.Instance) {
			in.Spec.Containers[0].Ports = []v1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 80, HostPort: n}}
		})
	}
	f := "spec.containers[0].ports[1].hostPort"
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", port(80)), http.StatusForbidden, f, "below 1024 are for the admin tenant only")
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", port(40000)), http.StatusUnprocessableEntity, f, "ephemeral range 40000-50000")
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", port(50000)), http.StatusUnprocessableEntity, f, "ephemeral range")
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", port(7443)), http.StatusUnprocessableEntity, f, "used by the platform itself")
	wantRefusal(t, ss.do(ss.admin, "POST", "/v1/instances", port(7443)), http.StatusUnprocessableEntity, f, "used by the platform itself")
	ss.must(http.StatusOK, ss.admin, "POST", "/v1/instances?dryRun=true", port(80))
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", port(8081))

	// Started, the server reserves its own port too.
	if err := ss.srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.srv.Close() })
	own := PortsOf(ss.srv.Addr())[0]
	if own < 40000 || own > 50000 {
		wantRefusal(t, ss.do(acme, "POST", "/v1/instances", port(own)), http.StatusUnprocessableEntity, f, "used by the platform itself")
	}
	if r := ephemeralRange(); r[0] < 1024 || r[0] > r[1] {
		t.Errorf("ephemeralRange() = %v; want a range above 1024", r)
	}
}

// TestTokenMintingBounds: a tenant's token cannot mint one that outlives
// it, nor more tokens than the bound.
func TestTokenMintingBounds(t *testing.T) {
	ss := newSecServer(t, func(c *Config) { c.MaxTokens = 4 })
	ss.tenant(v1.TenantRequest{Name: "acme"})
	var day v1.Token
	_ = json.Unmarshal(ss.must(http.StatusCreated, ss.admin, "POST", "/v1/tokens", v1.TokenRequest{Tenant: "acme", TTL: "24h"}).body, &day)
	wantRefusal(t, ss.do(day.Token, "POST", "/v1/tokens", v1.TokenRequest{TTL: "0"}), http.StatusForbidden, "ttl", "may not outlive")
	wantRefusal(t, ss.do(day.Token, "POST", "/v1/tokens", v1.TokenRequest{TTL: "48h"}), http.StatusForbidden, "ttl", "may not outlive")
	var child v1.Token
	_ = json.Unmarshal(ss.must(http.StatusCreated, day.Token, "POST", "/v1/tokens", v1.TokenRequest{}).body, &child)
	if child.Expires == nil || !child.Expires.Equal(*day.Expires) {
		t.Errorf("a default token minted by a 24h token expires %v; want with it at %v", child.Expires, day.Expires)
	}
	ss.must(http.StatusCreated, day.Token, "POST", "/v1/tokens", v1.TokenRequest{TTL: "1h"}) // the 4th
	wantRefusal(t, ss.do(day.Token, "POST", "/v1/tokens", v1.TokenRequest{TTL: "1h"}), http.StatusTooManyRequests, "", "tenant acme has 4 tokens")
	wantRefusal(t, ss.do(ss.admin, "POST", "/v1/tokens", v1.TokenRequest{Tenant: "acme"}), http.StatusTooManyRequests, "", "revoke unused ones")
}

// TestExecBounds: an exec request with a NUL byte or an oversized command
// is refused before anything reaches a node; a sound one goes on (to the
// 404 of an instance that does not exist).
func TestExecBounds(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances/web/exec", v1.ExecRequest{Command: []string{"sh", "-c\x00"}}), 422, "command[1]", "NUL")
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances/web/exec", v1.ExecRequest{Command: []string{"sh"}, Env: []string{"A=\x00"}}), 422, "env[0]", "NUL")
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances/web/exec", v1.ExecRequest{Command: make([]string, 1025)}), 422, "command", "at most 1024")
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances/web/exec", []byte(`{"command":["`+strings.Repeat("x", maxExecBody)+`"]}`)), 413, "", "256 KiB")
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances/web/exec", v1.ExecRequest{Command: []string{"sh"}}), 404, "", "not found")
}
