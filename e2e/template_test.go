package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/image/imagetest"
	"github.com/cube-platform/cube/sandbox/microvm"
)

// waitTemplates waits until the node has a ready VM template of size.
func (c *cluster) waitTemplate(t *testing.T, size string) {
	t.Helper()
	c.eventually(3*time.Minute, "the node's "+size+" template ready", func() error {
		var nodes []v1.Node
		if err := json.Unmarshal([]byte(c.mustCube("nodes", "-o", "json")), &nodes); err != nil {
			return err
		}
		for _, n := range nodes {
			for _, tp := range n.Status.Templates {
				if tp.Size == size && tp.State == "ready" {
					return nil
				}
			}
		}
		return fmt.Errorf("nodes: %+v", nodes)
	})
}

// defaultVMSize is the VM of an instance of one vCPU or less and the
// API's default memory.
func defaultVMSize() string {
	return "1x324M"
}

// TestMicroVMTemplateClones: instances start as clones of the node's
// template, and two clones of one template share no MAC, boot id, random
// stream or file; they reach each other as any two instances of a tenant
// do, and another tenant's clone reaches neither.
func TestMicroVMTemplateClones(t *testing.T) {
	c := startCluster(t)
	c.requireMicroVM(t)
	ref := "cube.test/busybox:tmpl"
	archive := imagetest.BuildBusybox(t, "", imagetest.WithRef(ref))
	alpha := strings.TrimSpace(c.mustCube("tenant", "create", "alpha"))
	beta := strings.TrimSpace(c.mustCube("tenant", "create", "beta"))
	for _, tok := range []string{alpha, beta} {
		c.mustCubeAs(tok, "image", "import", archive)
	}
	c.waitTemplate(t, defaultVMSize())
	if out := c.mustCube("nodes"); !strings.Contains(out, "1/1 ("+defaultVMSize()+")") {
		t.Errorf("cube nodes = %q; want the TEMPLATES column to count the ready %s template", out, defaultVMSize())
	}
	c.mustCubeAs(alpha, "run", "--runtime", "microvm", "--cpu", "0.1", "--name", "a1", ref, "--",
		"sh", "-c", "mkdir -p /www && echo alpha-a1 > /www/index.html && echo mine > /only-a1 && exec httpd -f -p 8080 -h /www")
	c.mustCubeAs(alpha, "run", "--runtime", "microvm", "--cpu", "0.1", "--name", "a2", ref, "--", "sleep", "600")
	c.mustCubeAs(beta, "run", "--runtime", "microvm", "--cpu", "0.1", "--name", "b1", ref, "--", "sleep", "600")
	for _, in := range []struct{ tok, name string }{{alpha, "a1"}, {alpha, "a2"}, {beta, "b1"}} {
		c.mustCubeAs(in.tok, "wait", in.name, "--for", "running", "--timeout", "120s")
		if from := strings.TrimSpace(c.mustCubeAs(in.tok, "get", in.name, "-o", "jsonpath={.status.vmBoot}")); from != "template" {
			t.Errorf("%s started %q; want from the node's template", in.name, from)
		}
	}
	ident := func(tok, name string) []string {
		out := c.mustCubeAs(tok, "exec", name, "--", "sh", "-c",
			"cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; cat /sys/class/net/eth0/address")
		f := strings.Fields(out)
		if len(f) != 3 {
			t.Fatalf("identity of %s: %q", name, out)
		}
		return f
	}
	a1, a2 := ident(alpha, "a1"), ident(alpha, "a2")
	for i, what := range []string{"boot id", "/dev/urandom bytes", "MAC"} {
		if a1[i] == a2[i] {
			t.Errorf("two clones share their %s: %q", what, a1[i])
		}
	}
	if _, _, code := c.cubeAs(alpha, "exec", "a2", "--", "cat", "/only-a1"); code == 0 {
		t.Error("a2 reads a file a1 wrote: the clones share a writable layer")
	}
	ip := strings.TrimSpace(c.mustCubeAs(alpha, "get", "a1", "-o", "jsonpath={.status.ip}"))
	get := `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "$0" 8080`
	if out, _, _ := c.cubeAs(alpha, "exec", "a2", "--", "sh", "-c", get, ip); !strings.Contains(out, "alpha-a1") {
		t.Errorf("a2 fetching a1 (same tenant) got %q; want alpha-a1", out)
	}
	if out, _, _ := c.cubeAs(beta, "exec", "b1", "--", "sh", "-c", get, ip); strings.Contains(out, "alpha-a1") {
		t.Errorf("b1 (another tenant) reached a1: %q", out)
	}
}

// TestMicroVMSuspendResume: a suspended instance frees its VM, keeps its
// IP and files, survives kill -9 of cube up, and resumes where it was: the
// counter inside goes on counting.
func TestMicroVMSuspendResume(t *testing.T) {
	c := startCluster(t)
	c.requireMicroVM(t)
	c.mustCube("image", "import", imagetest.BuildBusybox(t, "", imagetest.WithRef("busybox")))
	c.mustCube("run", "--runtime", "microvm", "--name", "count", "busybox", "--",
		"sh", "-c", "echo kept > /file; i=0; while :; do i=$((i+1)); echo $i > /count; sleep 0.1; done")
	c.mustCube("wait", "count", "--for", "running", "--timeout", "120s")
	counter := func() int {
		out := c.mustCube("exec", "count", "--", "cat", "/count")
		n, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("counter %q: %v", out, err)
		}
		return n
	}
	c.eventually(30*time.Second, "the counter counting", func() error {
		// Running is the shell's start: it may not have written /count
		// yet when the first exec comes (a warm VM runs the exec's path
		// faster than the shell's first instructions).
		out, _, code := c.cube("", "exec", "count", "--", "cat", "/count")
		if n, err := strconv.Atoi(strings.TrimSpace(out)); code != 0 || err != nil || n < 5 {
			return fmt.Errorf("counter %q (exit %d)", out, code)
		}
		return nil
	})
	ip := strings.TrimSpace(c.mustCube("get", "count", "-o", "jsonpath={.status.ip}"))
	uid := strings.TrimSpace(c.mustCube("get", "count", "-o", "jsonpath={.metadata.uid}"))
	before := counter()
	c.mustCube("suspend", "count")
	if phase := strings.TrimSpace(c.mustCube("get", "count", "-o", "jsonpath={.status.phase}")); phase != string(v1.PhaseSuspended) {
		t.Fatalf("phase after cube suspend = %q; want Suspended", phase)
	}
	if pids := microvm.VMMPids("/cube/" + uid); len(pids) != 0 {
		t.Fatalf("a suspended instance still has VMM processes %v", pids)
	}
	state := filepath.Join(c.dataDir, "node", "instances", uid, "sandbox", "suspend.state")
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("no saved state: %v", err)
	}
	fileRefusesNobody(t, state)
	c.kill9()
	c.start()
	c.mustCube("wait", "count", "--for", "suspended", "--timeout", "60s")
	c.mustCube("resume", "count")
	c.mustCube("wait", "count", "--for", "running", "--timeout", "60s")
	first := counter()
	c.eventually(30*time.Second, "the counter going on", func() error {
		if n := counter(); n <= first {
			return fmt.Errorf("counter still at %d", n)
		}
		return nil
	})
	if first < before {
		t.Errorf("the counter is at %d after the resume, below the %d before the suspend: it started over", first, before)
	}
	if got := strings.TrimSpace(c.mustCube("get", "count", "-o", "jsonpath={.status.ip}")); got != ip {
		t.Errorf("IP after the resume = %q; want %q", got, ip)
	}
	if out := c.mustCube("exec", "count", "--", "cat", "/file"); strings.TrimSpace(out) != "kept" {
		t.Errorf("/file after the resume = %q; want kept", out)
	}
	c.eventually(30*time.Second, "the Suspended and Resumed events", func() error {
		evs := c.mustCube("events", "count")
		for _, want := range []string{"Suspended", "Resumed"} {
			if !strings.Contains(evs, want) {
				return fmt.Errorf("events = %q; want %s", evs, want)
			}
		}
		return nil
	})
}
