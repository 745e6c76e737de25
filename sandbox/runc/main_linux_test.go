package runc

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

// testRootFS is a busybox image shared read-only by every test sandbox,
// built once by TestMain ("" when busybox is missing).
var testRootFS string

func TestMain(m *testing.M) {
	// Container inits are reparented to us when runc exits; only a
	// subreaper gets to reap them (the shim does the same).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "prctl(PR_SET_CHILD_SUBREAPER):", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "cube-busybox-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := sandboxtest.Busybox(dir); err == nil {
		testRootFS = dir
	} else {
		fmt.Fprintln(os.Stderr, "no busybox test image:", err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	// Every test sandbox's cgroup parent sits below /cube-test.
	if ms, err := cgroupMounts(); err == nil {
		for _, m := range ms {
			unix.Rmdir(filepath.Join(m.point, "cube-test"))
		}
	}
	if code == 0 {
		if err := checkGoroutineLeaks(5 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// requireRunc skips unless the test can drive real runc: it needs root,
// runc in PATH and busybox. With CI=true a missing runc fails instead.
func requireRunc(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (runc, mounts, cgroups): run as root, e.g. sudo go test")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("runc not found in PATH but CI=true: install it (apt-get install runc)")
		}
		t.Skip("runc not found in PATH: apt-get install runc")
	}
	if testRootFS == "" {
		t.Skip("no busybox test image: apt-get install busybox-static")
	}
}

func randomID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a copier
// and the reads of a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ io.Writer = (*syncBuffer)(nil)

// checkGoroutineLeaks waits for goroutines started by the tests to end and
// reports the stacks of those that do not.
func checkGoroutineLeaks(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		leaked := leakedGoroutines()
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaked goroutines:\n%s", strings.Join(leaked, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		// Only goroutines our code started can leak from our tests.
		if !strings.Contains(g, "cube-platform/cube") || strings.Contains(g, "leakedGoroutines") {
			continue
		}
		out = append(out, g)
	}
	return out
}
