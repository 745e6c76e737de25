package imagetest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryBinary is Debian's registry (package docker-registry).
var RegistryBinary = "/usr/bin/docker-registry"

const registryConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
health:
  storagedriver:
    enabled: false
`

// StartRegistry runs a real registry (docker-registry, filesystem storage
// in a temp dir) on a free loopback port, waits until /v2/ answers, stops
// it when the test ends and returns its address, "127.0.0.1:PORT". Push
// and pull over plain HTTP (loopback registries get HTTP by default in
// go-containerregistry). It skips the test when docker-registry is not
// installed, except under CI.
func StartRegistry(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(RegistryBinary); err != nil {
		Missing(t, fmt.Sprintf("no registry at %s; install it with `apt-get install docker-registry`", RegistryBinary))
	}
	dir := t.TempDir()
	var lastErr error
	// The free port may be taken between probe and bind: retry.
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := startRegistry(t, dir, attempt)
		if err == nil {
			return addr
		}
		lastErr = err
	}
	t.Fatalf("imagetest: start registry: %v", lastErr)
	return ""
}

func startRegistry(t testing.TB, dir string, attempt int) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	l.Close()

	cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", attempt))
	if err := os.WriteFile(cfg, fmt.Appendf(nil, registryConfig, filepath.Join(dir, "data"), addr), 0o644); err != nil {
		return "", err
	}
	var out lockedBuffer
	cmd := exec.Command(RegistryBinary, "serve", cfg)
	cmd.Stdout, cmd.Stderr = &out, &out
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			return "", fmt.Errorf("docker-registry exited at start: %s", out.String())
		default:
		}
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			return "", fmt.Errorf("docker-registry on %s did not answer /v2/ within 15s: %s", addr, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() && out.Len() > 0 {
			t.Logf("docker-registry output:\n%s", out.String())
		}
	})
	return addr, nil
}

// Push uploads img to ref (e.g. REGISTRY/cube/busybox:v1) over plain HTTP.
func Push(t testing.TB, img v1.Image, ref string) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("imagetest: push %q: %v", ref, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("imagetest: push %s: %v", ref, err)
	}
}

// PushIndex uploads a multi-platform index (see Index) to ref.
func PushIndex(t testing.TB, idx v1.ImageIndex, ref string) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("imagetest: push %q: %v", ref, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx)); err != nil {
		t.Fatalf("imagetest: push %s: %v", ref, err)
	}
}

// lockedBuffer collects a child's output for error messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}
