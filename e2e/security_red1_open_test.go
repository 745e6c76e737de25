package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/image/imagetest"
)

// inotifyHog opens inotify instances until the kernel refuses, says how
// many it holds, and holds them until /tmp/release exists (at most 20 s,
// so a failed test does not starve the machine for long).
const inotifyHog = `package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

func main() {
	n := 0
	for ; n < 100000; n++ {
		if _, err := syscall.InotifyInit1(0); err != nil {
			break
		}
	}
	fmt.Println("holding", n)
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat("/tmp/release"); err == nil {
			return
		}
	}
}
`

// buildStatic builds the Go program src as a static binary.
func buildStatic(t *testing.T, src string) []byte {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{"main.go": src, "go.mod": "module hog\n\ngo 1.24\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "build", "-o", "hog", ".")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the hog: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "hog"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSecurityRed1PerUserKernelLimits: an instance's root is the host's
// root (uid 0 of the initial user namespace), so kernel limits counted per
// user are shared with the host and every other tenant. A tenant's
// instance that takes all of root's inotify instances leaves the host's
// own root processes (and every other instance) without any.
func TestSecurityRed1PerUserKernelLimits(t *testing.T) {
	c := startCluster(t)
	ref := "cube.test/busybox:hog"
	archive := imagetest.BuildBusybox(t, "", imagetest.WithRef(ref),
		imagetest.WithLayer(imagetest.File("bin/inohog", 0o755, string(buildStatic(t, inotifyHog)))))
	evil := strings.TrimSpace(c.mustCube("tenant", "create", "evil"))
	c.mustCubeAs(evil, "image", "import", archive)
	c.mustCubeAs(evil, "run", "--name", "hog", "--cpu", "0.1", "--memory", "64Mi", "--restart", "never", ref, "--", "/bin/inohog")
	t.Cleanup(func() { c.cubeAs(evil, "rm", "-f", "hog") })

	// Positive control: the hog really holds inotify instances.
	c.eventually(60*time.Second, "the hog holds its inotify instances", func() error {
		out, _, _ := c.cubeAs(evil, "logs", "hog")
		if !strings.Contains(out, "holding ") || strings.Contains(out, "holding 0\n") {
			return errors.New("logs: " + out)
		}
		return nil
	})
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	c.cubeAs(evil, "exec", "hog", "--", "touch", "/tmp/release")
	if err != nil {
		t.Errorf("the host's root cannot make an inotify instance while a tenant's instance holds them: %v; want the instance bounded on its own", err)
	} else {
		unix.Close(fd)
	}
}
