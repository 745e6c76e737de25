package shim

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
	"github.com/cube-platform/cube/sandbox/sandboxtest"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox"
)

// The test binary doubles as the shim (and as a launcher that dies): with
// these variables set, TestMain runs that role instead of the tests.
const (
	envShimMain = "CUBE_SHIM_TEST_MAIN"     // run shim.Main on the last argument
	envLauncher = "CUBE_SHIM_TEST_LAUNCHER" // Launch the config in this file, print the pid, sleep
)

var testRootFS string

func TestMain(m *testing.M) {
	if path := os.Getenv(envLauncher); path != "" {
		os.Exit(runLauncher(path))
	}
	if os.Getenv(envShimMain) == "1" {
		if err := Main(context.Background(), os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, "shim:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// Shims orphaned by TestShimOutlivesItsLauncher are reparented to us, and
	// reaped by the test.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	os.Setenv(envShimMain, "1") // inherited by every shim the tests launch
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
	vmtest.Cleanup()
	if shimBinDir != "" {
		os.RemoveAll(shimBinDir)
	}
	for _, c := range []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd", "unified"} {
		unix.Rmdir(filepath.Join("/sys/fs/cgroup", c, "cube-shim-test"))
	}
	if code == 0 {
		if err := checkGoroutineLeaks(10 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// runLauncher is the child of TestShimOutlivesItsLauncher: it launches a
// shim, prints its pid and waits to be killed.
func runLauncher(cfgPath string) int {
	os.Unsetenv(envLauncher) // the shim it starts must be a shim
	os.Setenv(envShimMain, "1")
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Launch(ctx, []string{os.Args[0], "shim", "--config"}, cfg); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("launched")
	time.Sleep(time.Hour)
	return 0
}

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

// testConfig is a shim config for containers on the busybox image, with
// every path under one temp dir.
func testConfig(t *testing.T, policy string, containers ...sandbox.ContainerSpec) Config {
	t.Helper()
	requireRunc(t)
	b := make([]byte, 4)
	rand.Read(b)
	id := "s" + hex.EncodeToString(b)
	dir := t.TempDir()
	for i := range containers {
		containers[i].RootFS = sandbox.RootFS{Dir: testRootFS}
	}
	return Config{
		Sandbox: sandbox.Spec{
			ID: id, Hostname: id, StateDir: filepath.Join(dir, "state"),
			CgroupParent: "/cube-shim-test/" + id, Containers: containers,
		},
		RestartPolicy: policy,
		LogDir:        filepath.Join(dir, "logs"),
		Socket:        filepath.Join(dir, "shim", "shim.sock"),
		StopGrace:     2 * time.Second,
	}
}

func shell(name, script string) sandbox.ContainerSpec {
	return sandbox.ContainerSpec{Name: name, Args: []string{"sh", "-c", script}}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// launch starts a shim for cfg; cleanup shuts it down (or kills it).
func launch(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := Launch(testCtx(t), []string{os.Args[0], "shim", "--config"}, cfg)
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	t.Cleanup(func() { shutdownOrKill(t, c, cfg) })
	return c
}

func shutdownOrKill(t *testing.T, c *Client, cfg Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil && !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Shutdown: %v", err)
		if b, err := os.ReadFile(FilesFor(cfg.Socket).Pid); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	if t.Failed() {
		if b, err := os.ReadFile(FilesFor(cfg.Socket).Log); err == nil {
			t.Logf("shim log:\n%s", b)
		}
	}
}

// waitState long-polls until ok accepts the state.
func waitState(t *testing.T, c *Client, what string, ok func(State) bool) State {
	t.Helper()
	ctx := testCtx(t)
	var after uint64
	for {
		st, err := c.State(ctx, after)
		if err != nil {
			t.Fatalf("waiting for %s: State: %v", what, err)
		}
		if ok(st) {
			return st
		}
		after = st.Version
	}
}

func phaseIs(p string) func(State) bool { return func(s State) bool { return s.Phase == p } }

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

func checkGoroutineLeaks(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			// jail.forkLoop (the template TestWarmShim* builds in this
			// process) lives as long as the process, by design.
			if strings.Contains(g, "cube-platform/cube") && !strings.Contains(g, "checkGoroutineLeaks") && !strings.Contains(g, "jail.forkLoop") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaked goroutines:\n%s", strings.Join(leaked, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
