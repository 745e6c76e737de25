package allinone

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cube-platform/cube/internal/asuser"
)

// TestStartRefusesDataDirOfAnotherUser: user nobody makes /tmp/cube
// before root's first `cube up --data-dir /tmp/cube`. The chmod to 0700
// kept nobody the owner, so nobody could read admin.token and dial etcd's
// socket. Start must refuse such a dir, and leave nothing in it.
func TestStartRefusesDataDirOfAnotherUser(t *testing.T) {
	asuser.RequireRoot(t)
	requireRunc(t)
	base := t.TempDir()
	shared := filepath.Join(base, "tmp")
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o1777); err != nil { // like /tmp
		t.Fatal(err)
	}
	dir := filepath.Join(shared, "cube")
	if err := asuser.Do(asuser.Nobody, func() error { return os.Mkdir(dir, 0o777) }); err != nil {
		t.Fatal(err)
	}
	p, err := Start(context.Background(), Config{DataDir: dir, Listen: "127.0.0.1:0", Log: quiet()})
	if err == nil {
		p.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Fatalf("Start on nobody's dir = %v; want it refused, naming the owner", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Start left %d entries in nobody's dir; want none", len(ents))
	}
	// Positive control: the same path made by root starts.
	mine := filepath.Join(shared, "mine")
	if err := os.Mkdir(mine, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := preflight(Config{DataDir: mine}); err != nil {
		t.Errorf("preflight on root's own dir = %v; want ok", err)
	}
}
