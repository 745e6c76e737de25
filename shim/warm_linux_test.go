package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

var (
	warmTemplateOnce sync.Once
	warmTemplate     *microvm.Template
	warmTemplateErr  error
)

// shimTemplate is a template of the default VM size, built once.
func shimTemplate(t *testing.T) (*microvm.Template, int, int) {
	t.Helper()
	opts := vmtest.Options(t)
	vcpus, mib := microvm.SizeOf(sandbox.Spec{Containers: []sandbox.ContainerSpec{{}}})
	warmTemplateOnce.Do(func() {
		key, err := microvm.TemplateKeyFor(opts, vcpus, mib)
		if err != nil {
			warmTemplateErr = err
			return
		}
		root, err := os.MkdirTemp("", "cube-shim-templates-")
		if err != nil {
			warmTemplateErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		warmTemplate, warmTemplateErr = microvm.BuildTemplate(ctx, opts, key, root, "/cube-shim-test/template-"+key.ID(), nil)
	})
	if warmTemplateErr != nil {
		t.Fatalf("BuildTemplate: %v", warmTemplateErr)
	}
	return warmTemplate, vcpus, mib
}

// launchWarm launches a warm shim of the shared template.
func launchWarm(t *testing.T) Config {
	t.Helper()
	tp, vcpus, mib := shimTemplate(t)
	opts := vmtest.Options(t)
	opts.TemplateDir, opts.TemplateMemFD = tp.Dir, FirstExtraFD
	id := sandboxtest.RandomID()
	cfg := Config{
		Socket: filepath.Join(t.TempDir(), "warm-"+id, "shim.sock"), Backend: sandbox.BackendMicroVM, VM: opts,
		ExtraFiles: []*os.File{tp.Mem},
		Warm: &WarmSpec{VCPUs: vcpus, MemoryMiB: mib, CgroupParent: "/cube-shim-test/warm-" + id,
			Program: filepath.Join(vmtest.Image(t).Dir, "bin", "busybox")},
	}
	c, err := Launch(testCtx(t), []string{os.Args[0], "shim", "--config"}, cfg)
	if err != nil {
		t.Fatalf("Launch of a warm shim: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c.Shutdown(ctx) // an adopted one is gone from this socket
	})
	return cfg
}

func microvmConfig(t *testing.T, script string) Config {
	t.Helper()
	id := sandboxtest.RandomID()
	dir := t.TempDir()
	c := shell("app", script)
	c.RootFS = vmtest.Image(t)
	return Config{
		Sandbox:       sandbox.Spec{ID: id, Hostname: "h-" + id, StateDir: filepath.Join(dir, "state"), CgroupParent: "/cube-shim-test/" + id, Containers: []sandbox.ContainerSpec{c}},
		RestartPolicy: RestartNever, LogDir: filepath.Join(dir, "logs"), Socket: filepath.Join(dir, "shim", "shim.sock"),
		Backend: sandbox.BackendMicroVM, VM: vmtest.Options(t), StopGrace: 2 * time.Second,
	}
}

// TestWarmShimAdopt: a warm shim refuses configs that are not a microvm
// instance's and goes on waiting; then it becomes the instance's shim (the
// same process, on the instance's socket, with its files), runs it in
// the warm VM, and is gone from its own socket; Shutdown then removes the
// warm VM's files with the instance's.
func TestWarmShimAdopt(t *testing.T) {
	warm := launchWarm(t)
	pid := readPidFile(t, warm)
	ctx := testCtx(t)

	bad := microvmConfig(t, "true")
	bad.Sandbox.Containers = nil
	runcCfg := microvmConfig(t, "true")
	runcCfg.Backend = sandbox.BackendRunc
	warmCfg := microvmConfig(t, "true")
	warmCfg.Warm = warm.Warm
	for name, cfg := range map[string]Config{"no containers": bad, "runc": runcCfg, "another warm shim": warmCfg} {
		if _, err := Adopt(ctx, warm.Socket, cfg); err == nil {
			t.Errorf("Adopt of a config with %s succeeded", name)
		}
	}
	if err := Dial(warm.Socket).Ping(ctx); err != nil {
		t.Fatalf("the warm shim stopped answering after refused adoptions: %v", err)
	}

	cfg := microvmConfig(t, "echo hi-from-$HOSTNAME")
	c, err := Adopt(ctx, warm.Socket, cfg)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	defer shutdownOrKill(t, c, cfg)
	st := waitState(t, c, "Succeeded", func(s State) bool { return s.Phase == PhaseSucceeded || s.Phase == PhaseFailed })
	if st.Phase != PhaseSucceeded {
		t.Errorf("state %+v; want Succeeded", st)
	}
	if got := readLog(t, cfg, "app"); got != "hi-from-"+cfg.Sandbox.Hostname+"\n" {
		t.Errorf("log = %q", got)
	}
	if r, err := microvm.ReadBootRecord(cfg.Sandbox.StateDir); err != nil || r.From != "warm" {
		t.Errorf("boot record %+v, %v; want from warm", r, err)
	}
	if got := readPidFile(t, cfg); got != pid {
		t.Errorf("the instance's shim is pid %d; want the warm shim, %d", got, pid)
	}
	saved, err := LoadConfig(FilesFor(cfg.Socket).Config)
	if err != nil || saved.Sandbox.ID != cfg.Sandbox.ID || saved.VM.TemplateMemFD != 0 {
		t.Errorf("saved config %+v, %v; want the instance's, naming no fd", saved.Sandbox.ID, err)
	}
	if _, err := os.Stat(warm.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the warm socket is left after adoption: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(warm.Socket), AdoptedFile)); err != nil || string(b) != cfg.Socket {
		t.Errorf("the adopted mark says %q (%v); want the instance's socket", b, err)
	}
	for _, d := range []string{filepath.Dir(warm.Socket), filepath.Join(filepath.Dir(warm.Socket), warmVMDir)} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: %v (%v); want it the node's alone", d, st.Mode(), err)
		}
	}
	if _, err := Adopt(ctx, warm.Socket, microvmConfig(t, "true")); err == nil {
		t.Errorf("a second Adopt of the same warm shim succeeded")
	}
	if b, err := os.ReadFile(FilesFor(cfg.Socket).Log); err != nil || !strings.Contains(string(b), "shim serving") {
		t.Errorf("the instance's shim log lacks the adopted shim's lines (%v)", err)
	}

	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	vmDir := filepath.Join(filepath.Dir(warm.Socket), warmVMDir)
	if _, err := os.Stat(vmDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the warm vm's dir is left after Shutdown: %v", err)
	}
}

// TestWarmShimShutdown: a warm shim nobody adopted stops its VM and
// removes its files on /shutdown.
func TestWarmShimShutdown(t *testing.T) {
	warm := launchWarm(t)
	pid := readPidFile(t, warm)
	if err := Dial(warm.Socket).Shutdown(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	reap(t, pid)
	dir := filepath.Dir(warm.Socket)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "shim.log" {
			t.Errorf("%s is left after the warm shim's shutdown", e.Name())
		}
	}
}
