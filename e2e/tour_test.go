package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/cube-platform/cube/guest/kernel"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
)

// TestTour follows the README: an image made by hack/mkbusybox is imported
// and run by its short name; attached runs exit with the container's code;
// a two-container instance shares one network namespace; apply is
// idempotent; an instance over its memory is OOM-killed and says so.
func TestTour(t *testing.T) {
	c := startCluster(t)
	tarPath := filepath.Join(t.TempDir(), "busybox.tar")
	mk := exec.Command("go", "run", "../hack/mkbusybox", "-o", tarPath)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkbusybox: %v\n%s", err, out)
	}
	if out := c.mustCube("image", "import", tarPath); !strings.Contains(out, "docker.io/library/busybox:latest") {
		t.Fatalf("import printed %q; want the image name", out)
	}

	out, _, code := c.cube("", "run", "--attach", "--restart", "never", "--name", "hello", "busybox", "--", "sh", "-c", "echo hello-from-cube; exit 3")
	if code != 3 || !strings.Contains(out, "hello-from-cube") {
		t.Errorf("run --attach: exit %d, out %q; want exit 3 and the output", code, out)
	}

	// The same image in a VM of its own: the guest's kernel answers.
	c.requireMicroVM(t)
	release, err := kernel.Release(vmtest.Kernel(t))
	if err != nil {
		t.Fatal(err)
	}
	if out := c.mustCube("run", "--runtime", "microvm", "--attach", "--restart", "never", "--name", "vm", "busybox", "--", "uname", "-r"); strings.TrimSpace(out) != release {
		t.Errorf("uname -r in a microvm = %q; want the guest kernel's %q", out, release)
	}

	// on-failure:2 runs a failing command three times, then gives up.
	c.mustCube("run", "--restart", "on-failure:2", "--name", "flaky", "busybox", "--", "sh", "-c", "echo try; exit 4")
	c.mustCube("wait", "flaky", "--for", "exited", "--timeout", "60s")
	if in, err := c.client.GetInstance(context.Background(), "flaky"); err != nil {
		t.Fatal(err)
	} else if cs := in.Status.Containers; in.Status.Phase != v1.PhaseFailed || len(cs) != 1 || cs[0].RestartCount != 2 || cs[0].ExitCode != 4 {
		t.Errorf("flaky: %s %+v; want Failed with exit 4 after 2 restarts", in.Status.Phase, cs)
	}
	if out := c.mustCube("logs", "flaky"); strings.Count(out, "try") != 3 {
		t.Errorf("flaky logs %q; want 3 tries", out)
	}
	// Its events tell the story, each exit with its code.
	c.eventually(10*time.Second, "events of flaky", func() error {
		var evs []v1.Event
		if err := json.Unmarshal([]byte(c.mustCube("events", "flaky", "-o", "json")), &evs); err != nil {
			return err
		}
		var seen []string
		for _, e := range evs {
			if e.Reason == "Exited" && (e.ExitCode == nil || *e.ExitCode != 4) {
				return fmt.Errorf("exit event %+v; want exit code 4", e)
			}
			seen = append(seen, e.Reason)
		}
		// Usually Created,Scheduled,Creating,Started,Exited,Restarted,
		// Exited,Restarted,Exited,Failed. A node that stalls past a
		// back-off reports several steps as one change, and lastExit keeps
		// only the run before: then a Restarted (and an early Exited) may
		// be missing, never doubled or out of order.
		got := strings.Join(seen, ",")
		t.Logf("events of flaky: %s", got)
		exits, restarts := strings.Count(got, "Exited"), strings.Count(got, "Restarted")
		if !strings.HasPrefix(got, "Created,Scheduled,Creating,") || !strings.HasSuffix(got, ",Exited,Failed") ||
			exits < 2 || exits > 3 || restarts < 1 || restarts > 2 {
			return fmt.Errorf("events %s; want Created,Scheduled,Creating first, Exited,Failed last, 2-3 exits and 1-2 restarts", got)
		}
		if f := evs[len(evs)-1]; f.Type != v1.EventWarning || f.RestartCount != 2 || f.ExitCode == nil || *f.ExitCode != 4 {
			return fmt.Errorf("failed event %+v; want a Warning with exit code 4 after 2 restarts", f)
		}
		return nil
	})
	if out := c.mustCube("events", "--for", "flaky", "--types", "Warning"); strings.Contains(out, "Started") || !strings.Contains(out, "exited with code 4") {
		t.Errorf("warning events %q; want the exits and not the start", out)
	}

	// Two containers, one network namespace: the sidecar reads the web
	// container over 127.0.0.1 (no pause container in between).
	manifest := strings.ReplaceAll(mustRead(t, "../docs/examples/two-containers.yaml"), "hostPort: 8081", fmt.Sprintf("hostPort: %d", freeHostPort(t))) // not ephemeral
	path := filepath.Join(t.TempDir(), "pair.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	// diff exits 1 while apply would change something, 0 once it would not.
	if out, errOut, code := c.cube("", "diff", "-f", path); code != 1 || !strings.Contains(out, "+  name: pair\n") {
		t.Errorf("diff before apply: exit %d, stdout %q, stderr %q; want 1 and pair added", code, out, errOut)
	}
	if out := c.mustCube("apply", "-f", path); !strings.Contains(out, "instance/pair created") {
		t.Errorf("apply printed %q", out)
	}
	if out := c.mustCube("apply", "-f", path); !strings.Contains(out, "instance/pair unchanged") {
		t.Errorf("second apply printed %q; want unchanged", out)
	}
	if out, errOut, code := c.cube("", "diff", "-f", path); code != 0 || out != "" {
		t.Errorf("diff after apply: exit %d, stdout %q, stderr %q; want 0 and nothing", code, out, errOut)
	}
	bigger := strings.Replace(manifest, "memory: 64Mi", "memory: 128Mi", 1)
	if out, errOut, code := c.cube(bigger, "diff", "-f", "-"); code != 1 || !strings.Contains(out, "-      memory: 64Mi\n+      memory: 128Mi\n") || !strings.Contains(errOut, "immutable") {
		t.Errorf("diff of a changed manifest: exit %d, stdout %q, stderr %q; want 1, the memory change, and that apply would refuse it", code, out, errOut)
	}
	c.mustCube("wait", "pair", "--for", "running", "--timeout", "60s")
	c.eventually(30*time.Second, "sidecar reaches web over localhost", func() error {
		out, _, _ := c.cube("", "logs", "pair", "--container", "sidecar")
		if !strings.Contains(out, "from-web") {
			return fmt.Errorf("sidecar logs %q", out)
		}
		return nil
	})
	web := strings.TrimSpace(c.mustCube("exec", "-c", "web", "pair", "--", "hostname"))
	side := strings.TrimSpace(c.mustCube("exec", "-c", "sidecar", "pair", "--", "hostname"))
	if web != "pair" || side != "pair" {
		t.Errorf("hostnames %q and %q; want both pair (one UTS namespace)", web, side)
	}

	// Memory limits are enforced and reported.
	c.mustCube("run", "--name", "hog", "--restart", "never", "--memory", "16Mi", "busybox", "--", "sh", "-c", "x=$(dd if=/dev/zero bs=1M count=256 | tr '\\0' x); echo survived")
	c.mustCube("wait", "hog", "--for", "exited", "--timeout", "60s")
	in, err := c.client.GetInstance(context.Background(), "hog")
	if err != nil {
		t.Fatal(err)
	}
	if in.Status.Phase != v1.PhaseFailed || len(in.Status.Containers) != 1 || !in.Status.Containers[0].OOMKilled || in.Status.Reason != "OOMKilled" {
		t.Errorf("hog status %s %s %+v; want Failed OOMKilled", in.Status.Phase, in.Status.Reason, in.Status.Containers)
	}

	// Tenants: acme imports its own image, its system band needs the
	// admin's grant, and a token it was given is revoked.
	acme := strings.TrimSpace(c.mustCube("tenant", "create", "acme", "--weight", "2", "--quota", "batch=cpu=4,memory=8Gi,instances=10"))
	c.mustCubeAs(acme, "image", "import", tarPath)
	c.mustCubeAs(acme, "run", "--name", "job", "--priority", "batch", "busybox", "--", "sleep", "600")
	if _, errOut, code := c.cubeAs(acme, "run", "--name", "vip", "--priority", "system", "busybox"); code == 0 || !strings.Contains(errOut, "--allow-priority system") {
		t.Errorf("acme's run --priority system: exit %d, %q; want it refused naming the grant", code, errOut)
	}
	c.mustCube("tenant", "update", "acme", "--allow-priority", "system")
	c.mustCubeAs(acme, "run", "--name", "vip", "--priority", "system", "busybox", "--", "sleep", "600")
	ro := strings.TrimSpace(c.mustCube("token", "create", "--tenant", "acme", "--scope", "read-only", "--ttl", "24h"))
	// On a small node vip (system) may preempt job (batch): ps -a shows both.
	if out := c.mustCubeAs(ro, "ps", "-a"); !strings.Contains(out, "job") || !strings.Contains(out, "vip") {
		t.Errorf("acme's ps -a with a read-only token = %q; want job and vip", out)
	}
	var toks []v1.Token
	if err := json.Unmarshal([]byte(c.mustCube("token", "ls", "--tenant", "acme", "-o", "json")), &toks); err != nil {
		t.Fatal(err)
	}
	revoked := 0
	for _, tk := range toks {
		if tk.Scope == "read-only" {
			c.mustCube("token", "revoke", tk.Metadata.Name)
			revoked++
		}
	}
	if revoked != 1 {
		t.Fatalf("token ls showed %d read-only tokens of acme; want 1: %+v", revoked, toks)
	}
	if _, errOut, code := c.cubeAs(ro, "ps"); code == 0 {
		t.Errorf("ps with a revoked token succeeded; want 401 (%q)", errOut)
	}
	if out := c.mustCube("ps", "-a"); strings.Contains(out, "vip") || strings.Contains(out, "job") {
		t.Errorf("the admin's ps -a = %q; another tenant's instances must not show", out)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
