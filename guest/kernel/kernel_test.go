package kernel

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cube-platform/cube/errdefs"
)

func TestHashStableAndSensitive(t *testing.T) {
	if Hash() != Hash() {
		t.Fatal("Hash() is not stable")
	}
	if len(Hash()) != 16 {
		t.Errorf("Hash() = %q; want 16 hex digits", Hash())
	}
	base := hashOf(fragment, buildScript, "6.1.1-1")
	for name, h := range map[string]string{
		"fragment": hashOf(append([]byte("CONFIG_FOO=y\n"), fragment...), buildScript, "6.1.1-1"),
		"script":   hashOf(fragment, append([]byte("#\n"), buildScript...), "6.1.1-1"),
		"version":  hashOf(fragment, buildScript, "6.1.1-2"),
	} {
		if h == base {
			t.Errorf("changing the %s kept the hash %s", name, base)
		}
	}
	if hashOf(fragment, buildScript, "6.1.1-1") != base {
		t.Error("hashOf is not deterministic")
	}
}

// TestScriptHashAgrees checks that build.sh computes the same cache key as
// Go: otherwise the kernel would be built where Find never looks.
func TestScriptHashAgrees(t *testing.T) {
	if sourceVersion() == "" {
		requireOrSkip(t, "linux-source-6.1 is not installed (apt-get install linux-source-6.1)")
	}
	out, err := exec.Command("/bin/bash", "build.sh", "--print-hash").Output()
	if err != nil {
		t.Fatalf("build.sh --print-hash: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != Hash() {
		t.Errorf("build.sh --print-hash = %s; Hash() = %s", got, Hash())
	}
}

// writeKernel fills dir with the named files, each non-empty.
func writeKernel(t *testing.T, dir string, files ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		body := "x"
		if f == "release" {
			body = "6.1.192-cube\n"
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFind(t *testing.T) {
	cache := t.TempDir()
	if p, ok := Find(cache); ok {
		t.Fatalf("Find(empty cache) = %s, true; want false", p)
	}
	// A build's work dir with a whole kernel in it is not the kernel.
	writeKernel(t, filepath.Join(cache, "kernel", ".build-"+Hash()+".abc", "out"), "vmlinux", "config", "release")
	if p, ok := Find(cache); ok {
		t.Fatalf("Find found %s in a work dir", p)
	}
	// Another hash's kernel is not ours.
	writeKernel(t, filepath.Join(cache, "kernel", "0123456789abcdef"), "vmlinux", "config", "release")
	if p, ok := Find(cache); ok {
		t.Fatalf("Find found another hash's kernel %s", p)
	}
	dir := Dir(cache)
	writeKernel(t, dir, "vmlinux")
	if p, ok := Find(cache); ok {
		t.Fatalf("Find(vmlinux without config and release) = %s, true; want false", p)
	}
	writeKernel(t, dir, "config")
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if p, ok := Find(cache); ok {
		t.Fatalf("Find(empty release) = %s, true; want false", p)
	}
	writeKernel(t, dir, "release")
	p, ok := Find(cache)
	if !ok || p != Path(cache) {
		t.Fatalf("Find(complete) = %s, %v; want %s, true", p, ok, Path(cache))
	}
	rel, err := Release(p)
	if err != nil || rel != "6.1.192-cube" {
		t.Errorf("Release = %q, %v; want 6.1.192-cube", rel, err)
	}
}

func TestRelease(t *testing.T) {
	for _, tc := range []struct {
		body string
		want error
	}{
		{"6.1.192-cube\n", nil},
		{"", errdefs.ErrInvalid},
		{"6.1 cube", errdefs.ErrInvalid},
		{strings.Repeat("9", 200), errdefs.ErrInvalid},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "release"), []byte(tc.body), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Release(filepath.Join(dir, "vmlinux"))
		if !errors.Is(err, tc.want) && (err != nil || tc.want != nil) {
			t.Errorf("Release(%q) = %v; want %v", tc.body, err, tc.want)
		}
	}
	if _, err := Release(filepath.Join(t.TempDir(), "vmlinux")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Release(no file) = %v; want ErrNotFound", err)
	}
}

func TestParseProgress(t *testing.T) {
	st, n := Status{Phase: PhaseIdle}, 0
	steps := []struct {
		line  string
		phase Phase
		steps int
		step  string
	}{
		{"cube-kernel: phase lock", PhaseWaiting, 0, ""},
		{"cube-kernel: hash abc source 6.1 work /x", PhaseWaiting, 0, ""},
		{"cube-kernel: phase unpack", PhaseUnpack, 0, ""},
		// Step lines outside the compile phase do not count.
		{"  HOSTCC  scripts/basic/fixdep", PhaseUnpack, 0, ""},
		{"cube-kernel: phase config", PhaseConfig, 0, ""},
		{"cube-kernel: phase compile", PhaseCompile, 0, ""},
		{"make: Entering directory '/x'", PhaseCompile, 0, ""},
		{"  CC      kernel/fork.o", PhaseCompile, 1, "CC kernel/fork.o"},
		{"  LD      vmlinux.o", PhaseCompile, 2, "LD vmlinux.o"},
		{"  cc1: warning: something", PhaseCompile, 2, "LD vmlinux.o"},
		{"kernel/fork.c:1:2: warning: x", PhaseCompile, 2, "LD vmlinux.o"},
		{"   ", PhaseCompile, 2, "LD vmlinux.o"},
		{"cube-kernel: phase install", PhaseInstall, 2, "LD vmlinux.o"},
	}
	last := 0
	for _, s := range steps {
		st, n = parseProgress(st, n, s.line)
		if st.Phase != s.phase || n != s.steps || st.Step != s.step {
			t.Errorf("after %q: phase %s steps %d step %q; want %s %d %q", s.line, st.Phase, n, st.Step, s.phase, s.steps, s.step)
		}
		if st.Percent < last {
			t.Errorf("after %q: percent went back from %d to %d", s.line, last, st.Percent)
		}
		last = st.Percent
	}
	if p := percent(PhaseCompile, compileSteps*10); p >= 100 {
		t.Errorf("percent(compile, far too many steps) = %d; want < 100 until done", p)
	}
	if p := percent(PhaseCompile, compileSteps/2); p < 40 || p > 70 {
		t.Errorf("percent(compile, half the steps) = %d; want about half", p)
	}
}

// requireOrSkip skips with reason, or fails under CI=true, where every
// prerequisite must be there.
func requireOrSkip(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s, but CI=true", reason)
	}
	t.Skip(reason)
}
