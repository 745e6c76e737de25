package vmhost

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm"
	"github.com/cube-platform/cube/shim"
)

func noTemplate(microvm.TemplateKey) (*microvm.Template, sandbox.VMOptions, bool) {
	return nil, sandbox.VMOptions{}, false
}

// TestWarmPoolTake: a size gets warm VMs only when asked for, at most
// maxWarmSizes sizes are; take hands each idle warm shim out once.
func TestWarmPoolTake(t *testing.T) {
	p := newWarmPool(t.TempDir(), 1, []string{"/bin/false"}, "", slog.New(slog.DiscardHandler), noTemplate)
	keys := []microvm.TemplateKey{{VCPUs: 1, MemoryMiB: 128}, {VCPUs: 1, MemoryMiB: 324}, {VCPUs: 2, MemoryMiB: 580}}
	if _, ok := p.take(keys[0]); ok {
		t.Fatal("take from an empty pool succeeded")
	}
	allReady := func(microvm.TemplateKey) (*microvm.Template, sandbox.VMOptions, bool) {
		return &microvm.Template{}, sandbox.VMOptions{}, true
	}
	p.ready = allReady
	for _, k := range keys {
		p.want(k)
	}
	if _, ok := p.sizes[keys[2]]; ok {
		t.Errorf("a third size displaced one whose template is ready")
	}
	if len(p.sizes) != maxWarmSizes {
		t.Errorf("%d sizes wanted; want at most %d", len(p.sizes), maxWarmSizes)
	}
	p.sizes[keys[0]].idle = []string{"/a.sock", "/b.sock"}
	if n, taken := p.count(keys[0]); n != 2 || taken != 0 {
		t.Errorf("count = %d, %d; want 2 idle, none taken", n, taken)
	}
	for _, want := range []string{"/a.sock", "/b.sock"} {
		if got, ok := p.take(keys[0]); !ok || got != want {
			t.Errorf("take = %q, %v; want %q", got, ok, want)
		}
	}
	if _, ok := p.take(keys[0]); ok {
		t.Error("a warm shim was handed out twice")
	}
	if n, taken := p.count(keys[0]); n != 0 || taken != 2 {
		t.Errorf("count = %d, %d; want none idle, 2 taken", n, taken)
	}
	p.ready = noTemplate
	if _, ok := p.next(); ok {
		t.Error("next picked a size whose template is not ready")
	}
	// With every size's template ready but keys[1]'s (gone stale), a new
	// size takes keys[1]'s place.
	p.ready = func(k microvm.TemplateKey) (*microvm.Template, sandbox.VMOptions, bool) {
		return &microvm.Template{}, sandbox.VMOptions{}, k != keys[1]
	}
	p.want(keys[2])
	if _, ok := p.sizes[keys[2]]; !ok || len(p.sizes) != maxWarmSizes {
		t.Errorf("sizes %v; want %v in place of the stale %v", p.sizes, keys[2], keys[1])
	}
	if _, ok := p.sizes[keys[1]]; ok {
		t.Errorf("the stale size is still wanted")
	}
}

// TestWarmPoolSweep: a warm shim a previous node left is shut down; the
// dir of an adopted warm VM (its files, marked adopted) stays; an empty
// one goes, and so does one whose warm shim died unadopted.
func TestWarmPoolSweep(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, vm bool) string {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if vm {
			os.Mkdir(filepath.Join(d, "warm-vm"), 0o700)
		}
		return d
	}
	left, adopted, empty, dead := mk("warm-left", true), mk("warm-adopted", true), mk("warm-empty", false), mk("warm-dead", true)
	if err := os.WriteFile(filepath.Join(adopted, shim.AdoptedFile), []byte("/x/shim.sock"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A fake warm shim: what a real one answers on its socket.
	var shutdowns atomic.Int32
	l, err := net.Listen("unix", filepath.Join(left, "shim.sock"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"pid":1}`)) })
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) { shutdowns.Add(1); w.Write([]byte(`{}`)) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Close()

	newWarmPool(dir, 1, nil, "", slog.New(slog.DiscardHandler), noTemplate).sweep(context.Background())
	if shutdowns.Load() != 1 {
		t.Errorf("the left warm shim got %d shutdowns; want 1", shutdowns.Load())
	}
	for _, d := range []string{left, adopted} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: it holds a warm vm's files", d)
		}
	}
	for _, d := range []string{empty, dead} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is left", d)
		}
	}
}
