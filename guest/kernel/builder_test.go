package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeBuildScript is a stand-in for build.sh (a real build takes minutes):
// it speaks build.sh's progress lines, counts its runs in dir/runs, writes
// its pid to dir/pid, blocks reading the fifo dir/gate when there is one,
// and installs a fake kernel the way build.sh does (a staging dir renamed
// into place).
func fakeBuildScript(dir string) []byte {
	return []byte(fmt.Sprintf(`#!/bin/bash
set -eu
d=%q
echo run >>"$d/runs"
echo $$ >"$d/pid"
echo "cube-kernel: phase unpack"
mkdir -p "$CACHE/kernel/.build-$CUBE_KERNEL_HASH.fake/out"
echo "cube-kernel: phase config"
echo "cube-kernel: phase compile"
echo "  CC      kernel/fork.o"
echo "  CC      kernel/exit.o"
echo "warning: on stderr" >&2
if [ -p "$d/gate" ]; then read -r _ <"$d/gate"; fi
if [ -f "$d/fail" ]; then echo "boom: the compiler ran out of luck" >&2; exit 3; fi
echo "cube-kernel: phase install"
s="$CACHE/kernel/.build-$CUBE_KERNEL_HASH.fake/out"
echo vmlinux >"$s/vmlinux"; echo cfg >"$s/config"; echo 6.1.0-fake >"$s/release"
mv -T "$s" "$CACHE/kernel/$CUBE_KERNEL_HASH"
rm -rf "$CACHE/kernel/.build-$CUBE_KERNEL_HASH.fake"
echo "cube-kernel: phase done"
`, dir))
}

func fakeBuilder(t *testing.T, cache, dir string) *Builder {
	t.Helper()
	cfg := DefaultBuilderConfig()
	cfg.CacheDir = cache
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := NewBuilder(cfg)
	b.fakeScript = fakeBuildScript(dir)
	return b
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitDone(t *testing.T, b *Builder) Status {
	t.Helper()
	select {
	case <-b.Done():
		return b.Status()
	case <-time.After(30 * time.Second):
		t.Fatalf("builder not done; status %+v", b.Status())
		return Status{}
	}
}

func runs(t *testing.T, dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "runs"))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "run\n")
}

func mkfifo(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "gate")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// leftovers lists what a build may leave in the kernel cache dir besides
// the lock and finished kernels.
func leftovers(t *testing.T, cache string) []string {
	t.Helper()
	var out []string
	ents, err := os.ReadDir(filepath.Join(cache, "kernel"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".build-") || strings.HasPrefix(e.Name(), ".script-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestBuilderSingleFlight runs two builders on one cache dir, as `make
// test` and `cube up` would in two processes (flock works per open file,
// so two builders in one process contend the same way): one builds, the
// other waits and then finds the result.
func TestBuilderSingleFlight(t *testing.T) {
	cache, dir := t.TempDir(), t.TempDir()
	gate := mkfifo(t, dir)
	b1, b2 := fakeBuilder(t, cache, dir), fakeBuilder(t, cache, dir)
	ctx := context.Background()
	b1.Start(ctx)
	waitFor(t, "the first build to compile", func() bool { return b1.Status().Phase == PhaseCompile && b1.Status().Step == "CC kernel/exit.o" })
	if p := b1.Status().Percent; p <= percent(PhaseConfig, 0) || p >= 100 {
		t.Errorf("percent while compiling = %d; want between config's and 100", p)
	}
	b2.Start(ctx)
	waitFor(t, "the second builder to wait", func() bool { return b2.Status().Phase == PhaseWaiting })
	// Release the first build.
	w, err := os.OpenFile(gate, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(w, "go")
	w.Close()
	s1, s2 := waitDone(t, b1), waitDone(t, b2)
	for i, s := range []Status{s1, s2} {
		if s.Phase != PhaseDone || s.Err != nil || s.Path != Path(cache) || s.Percent != 100 {
			t.Errorf("builder %d: %+v; want done at %s", i+1, s, Path(cache))
		}
	}
	if n := runs(t, dir); n != 1 {
		t.Errorf("the build ran %d times; want once", n)
	}
	if l := leftovers(t, cache); len(l) != 0 {
		t.Errorf("left behind %v", l)
	}
	// A third builder finds the kernel and runs nothing.
	b3 := fakeBuilder(t, cache, dir)
	b3.Start(ctx)
	if s := waitDone(t, b3); s.Phase != PhaseDone || s.Path != Path(cache) {
		t.Errorf("builder on a full cache: %+v", s)
	}
	if n := runs(t, dir); n != 1 {
		t.Errorf("a cached kernel was built again (%d runs)", n)
	}
}

// TestBuilderCancel cancels a build mid-compile: the script's process
// group is killed, its work dir removed, and the lock released.
func TestBuilderCancel(t *testing.T) {
	cache, dir := t.TempDir(), t.TempDir()
	mkfifo(t, dir) // nobody writes: the script blocks until killed
	b := fakeBuilder(t, cache, dir)
	ctx, cancel := context.WithCancel(context.Background())
	b.Start(ctx)
	waitFor(t, "the build to compile", func() bool { return b.Status().Phase == PhaseCompile })
	pidb, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidb)))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	s := waitDone(t, b)
	if s.Phase != PhaseFailed || !errors.Is(s.Err, context.Canceled) {
		t.Errorf("cancelled build: %+v; want failed with context.Canceled", s)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("build script %d still there after cancel (kill 0: %v)", pid, err)
	}
	if l := leftovers(t, cache); len(l) != 0 {
		t.Errorf("cancelled build left %v", l)
	}
	if _, ok := Find(cache); ok {
		t.Error("a cancelled build left a kernel")
	}
	// The lock is free: the next build proceeds and succeeds.
	os.Remove(filepath.Join(dir, "gate"))
	b2 := fakeBuilder(t, cache, dir)
	b2.Start(context.Background())
	if s := waitDone(t, b2); s.Phase != PhaseDone {
		t.Errorf("build after a cancelled one: %+v", s)
	}
}

// TestBuilderFailure: a failing script fails the build with its last
// stderr lines, and leaves no kernel and no work dir.
func TestBuilderFailure(t *testing.T) {
	cache, dir := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b := fakeBuilder(t, cache, dir)
	b.Start(context.Background())
	s := waitDone(t, b)
	if s.Phase != PhaseFailed || s.Err == nil || !strings.Contains(s.Err.Error(), "boom: the compiler ran out of luck") {
		t.Errorf("failed build: %+v; want failed with the script's stderr", s)
	}
	if _, ok := Find(cache); ok {
		t.Error("a failed build left a kernel")
	}
	if l := leftovers(t, cache); len(l) != 0 {
		t.Errorf("failed build left %v", l)
	}
}

func TestBuilderConfigValidate(t *testing.T) {
	for _, cfg := range []BuilderConfig{{CacheDir: ""}, {CacheDir: "rel/dir"}, {CacheDir: "/x", Jobs: -1}} {
		b := NewBuilder(cfg)
		b.Start(context.Background())
		if s := waitDone(t, b); s.Phase != PhaseFailed {
			t.Errorf("builder with %+v: %+v; want failed", cfg, s)
		}
	}
}
