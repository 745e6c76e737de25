package allinone

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-platform/cube/store"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestStartFailsCleanly: each boot step that fails returns its own error
// (no panic), and what had started is stopped again.
func TestStartFailsCleanly(t *testing.T) {
	ctx := context.Background()
	t.Run("runc missing", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := Start(ctx, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Log: quiet()})
		if err == nil || !strings.Contains(err.Error(), "runc not found") {
			t.Fatalf("Start without runc = %v; want it to say runc not found", err)
		}
	})
	requireRunc(t)
	t.Run("data dir is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Start(ctx, Config{DataDir: f, Listen: "127.0.0.1:0", Log: quiet()})
		if err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Fatalf("Start on a file = %v; want it to say not a directory", err)
		}
	})
	t.Run("port taken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		dir := t.TempDir()
		_, err = Start(ctx, Config{DataDir: dir, Listen: l.Addr().String(), Log: quiet()})
		if err == nil || !strings.Contains(err.Error(), "apiserver") || !strings.Contains(err.Error(), l.Addr().String()) {
			t.Fatalf("Start on a taken port = %v; want the apiserver step's error naming %s", err, l.Addr())
		}
		// The etcd member of the failed start was stopped: the same data
		// dir opens again at once. A member left running holds its lock.
		ectx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		e, err := store.StartEmbedded(ectx, filepath.Join(dir, "etcd"), quiet())
		if err != nil {
			t.Fatalf("reopen the etcd of a failed start: %v", err)
		}
		e.Close()
	})
	t.Run("random node port", func(t *testing.T) {
		_, err := Start(ctx, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", NodeListen: "127.0.0.1:0", Log: quiet()})
		if err == nil || !strings.Contains(err.Error(), "fixed port") {
			t.Fatalf("Start with --node-listen 127.0.0.1:0 = %v; want it refused (a random port could be a tenant's)", err)
		}
	})
	t.Run("etcd TLS files over http", func(t *testing.T) {
		_, err := Start(ctx, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Log: quiet(),
			Etcd: store.External{Endpoints: []string{"http://127.0.0.1:1"}, CAFile: "ca.pem"}})
		if err == nil || !strings.Contains(err.Error(), "https") {
			t.Fatalf("Start with TLS files and an http endpoint = %v; want it refused", err)
		}
	})
}

func requireRunc(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("runc"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("runc not installed; the Makefile installs it under CI")
		}
		t.Skip("runc not installed: run make deps")
	}
}

// TestTokenFileKeepsTokenOnStoreError: a token is re-minted only when the
// store truly does not know it, never because etcd did not answer.
func TestTokenFileKeepsTokenOnStoreError(t *testing.T) {
	ctx := context.Background()
	e, err := store.StartEmbedded(ctx, t.TempDir(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(e.Client)
	path := filepath.Join(t.TempDir(), "admin.token")
	want := store.Token{Tenant: "admin", Role: store.RoleTenant, Created: time.Now()}
	first, err := tokenFile(ctx, st, path, want)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := tokenFile(ctx, st, path, want); err != nil || again != first {
		t.Fatalf("second tokenFile = %q, %v; want the same token %q", again, err, first)
	}
	e.Close() // etcd is gone: lookups fail as unavailable
	if got, err := tokenFile(ctx, st, path, want); err == nil {
		t.Fatalf("tokenFile with etcd down = %q, nil; want an error, not a new token", got)
	}
	b, _ := os.ReadFile(path)
	if strings.TrimSpace(string(b)) != first {
		t.Errorf("token file after a store error = %q; want it unchanged (%q)", b, first)
	}
}
