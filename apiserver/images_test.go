package apiserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/image/imagetest"
	"github.com/cube-platform/cube/store"
)

// TestImageOwner: a tenant's image-storage quota is its record's, or the
// default; the admin's is unlimited.
func TestImageOwner(t *testing.T) {
	ts := newTestServer(t)
	srv := &Server{store: ts.st}
	ctx := context.Background()
	if err := ts.st.PutTenant(ctx, store.Tenant{Name: "big", ImageStorage: "20Gi"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		tenant string
		want   int64
	}{{"big", 20 << 30}, {"plain", DefaultImageStorage}, {AdminTenant, 0}} {
		o, err := srv.imageOwner(ctx, tt.tenant)
		if err != nil || o.Tenant != tt.tenant || o.Quota != tt.want {
			t.Errorf("imageOwner(%s) = %+v, %v; want quota %d", tt.tenant, o, err, tt.want)
		}
	}
}

// TestPullGuardWiring: through the handler, a tenant's pull from a
// loopback registry is 403 naming the flag; the admin's is 201; with
// RegistryAllow the tenant's is 201.
func TestPullGuardWiring(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	ref := reg + "/cube/busybox:v1"
	imagetest.Push(t, imagetest.BusyboxImage(t), ref)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	e, err := store.StartEmbedded(ctx, t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	st := store.New(e.Client)
	pull := func(allow []string, tenant string) (int, string) {
		imgs, err := image.NewLocalStore(t.TempDir(), log)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := New(Config{Listen: "127.0.0.1:0", Store: st, Images: imgs, Log: log, RegistryAllow: allow})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := st.CreateToken(ctx, store.Token{Tenant: tenant, Role: store.RoleTenant})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, "/v1/images/pull", strings.NewReader(`{"image":"`+ref+`","insecure":true}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	if code, body := pull(nil, "acme"); code != http.StatusForbidden || !strings.Contains(body, "--registry-allow "+reg) {
		t.Errorf("tenant pull from loopback = %d %s; want 403 naming --registry-allow %s", code, body, reg)
	}
	if code, body := pull(nil, AdminTenant); code != http.StatusCreated {
		t.Errorf("admin pull from loopback = %d %s; want 201", code, body)
	}
	if code, body := pull([]string{reg}, "acme"); code != http.StatusCreated {
		t.Errorf("tenant pull from an allowed registry = %d %s; want 201", code, body)
	}
	imgs, err := image.NewLocalStore(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Listen: "127.0.0.1:0", Store: st, Images: imgs, Log: log, RegistryAllow: []string{"no-port"}}); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
		t.Errorf("New(RegistryAllow no-port) = %v; want an error asking for HOST:PORT", err)
	}
}
