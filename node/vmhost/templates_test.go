package vmhost

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm"
)

// TestPruneTemplates: a saved template of today's binaries stays; one of
// a replaced kernel, a damaged one and an unfinished build go.
func TestPruneTemplates(t *testing.T) {
	dir := t.TempDir()
	bin := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	o := sandbox.VMOptions{Kernel: bin("vmlinux"), Initrd: bin("initrd"), VMM: bin("qemu"), Accel: "tcg"}
	root := filepath.Join(dir, "templates")
	save := func(key microvm.TemplateKey) string {
		d := filepath.Join(root, key.ID())
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(map[string]any{"key": key})
		if err := os.WriteFile(filepath.Join(d, "meta.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}
	key, err := microvm.TemplateKeyFor(o, 1, 324)
	if err != nil {
		t.Fatal(err)
	}
	keep := save(key)
	stale := key
	stale.Kernel = "/old/vmlinux:1:2:3"
	old := save(stale)
	damaged := filepath.Join(root, "0123456789abcdef")
	unfinished := filepath.Join(root, ".build-x-1")
	for _, d := range []string{damaged, unfinished} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	newTemplates(root, slog.New(slog.DiscardHandler), nil).prune(o)
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the usable template was removed: %v", err)
	}
	for _, d := range []string{old, damaged, unfinished} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v); want it pruned", d, err)
		}
	}
}
