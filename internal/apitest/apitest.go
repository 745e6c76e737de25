// Package apitest runs the real API server over an embedded etcd for the
// tests of packages that talk to it (client, cli). Nothing is faked: only
// the node side is absent.
package apitest

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/cube-platform/cube/apiserver"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/store"
)

// Server starts an API server on a fresh embedded etcd and image store,
// all removed at the end of the test, and returns its store, its handler
// (serve it with httptest, wrapped as the test needs) and a token of
// tenant.
func Server(t testing.TB, tenant string) (*store.Store, http.Handler, string) {
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
	srv, err := apiserver.New(apiserver.Config{Listen: "127.0.0.1:0", Store: st, Images: imgs, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := st.CreateToken(ctx, store.Token{Tenant: tenant, Role: store.RoleTenant})
	if err != nil {
		t.Fatal(err)
	}
	return st, srv.Handler(), tok
}
