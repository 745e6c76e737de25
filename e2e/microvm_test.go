package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/guest/kernel"
	"github.com/cube-platform/cube/image/imagetest"
	"github.com/cube-platform/cube/sandbox/microvm"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
)

// requireMicroVM skips (fails under CI) unless VMs can run here, and waits
// for the cluster's node to offer microvm.
func (c *cluster) requireMicroVM(t *testing.T) {
	t.Helper()
	vmtest.Require(t)
	c.eventually(60*time.Second, "the node offers microvm", func() error {
		var nodes []v1.Node
		if err := json.Unmarshal([]byte(c.mustCube("nodes", "-o", "json")), &nodes); err != nil {
			return err
		}
		if len(nodes) != 1 || !slices.Contains(nodes[0].Status.Runtimes, v1.RuntimeMicroVM) {
			return fmt.Errorf("nodes = %+v", nodes)
		}
		return nil
	})
}

// vmmOf returns the pid of the VMM running instance name's VM (the
// process in its VMM cgroup, /cube/<uid>/vmm).
func (c *cluster) vmmOf(t *testing.T, name string) int {
	t.Helper()
	uid := strings.TrimSpace(c.mustCube("get", name, "-o", "jsonpath={.metadata.uid}"))
	pids := microvm.VMMPids("/cube/" + uid)
	if len(pids) != 1 {
		t.Fatalf("vmm processes of instance %s (uid %s): %v; want one", name, uid, pids)
	}
	return pids[0]
}

// TestMicroVM runs instances in VMs through the whole platform: the guest
// kernel answers uname, exec and logs work, a published port answers on
// the host, two VMs of one tenant reach each other, and the VMM is jailed.
func TestMicroVM(t *testing.T) {
	c := startCluster(t)
	c.requireMicroVM(t)
	tar := imagetest.BuildBusybox(t, "", imagetest.WithRef("busybox"))
	c.mustCube("image", "import", tar)
	release, err := kernel.Release(vmtest.Kernel(t))
	if err != nil {
		t.Fatal(err)
	}

	// One-shot: the guest's kernel, not the host's.
	out := c.mustCube("run", "--runtime", "microvm", "--restart", "never", "--attach", "--name", "uname", "busybox", "--", "uname", "-r")
	if strings.TrimSpace(out) != release {
		t.Errorf("uname -r in a microvm = %q; want the guest kernel's %q", out, release)
	}
	if rt := c.mustCube("get", "uname", "-o", "jsonpath={.spec.runtime}"); strings.TrimSpace(rt) != "microvm" {
		t.Errorf("spec.runtime = %q; want microvm", rt)
	}

	port := freeHostPort(t)
	c.mustCube("run", "--runtime", "microvm", "--name", "web", "--memory", "64Mi", "-p", fmt.Sprintf("%d:80", port), "busybox", "--",
		"sh", "-c", "mkdir -p /www && echo hello-vm > /www/index.html && echo started && exec httpd -f -p 80 -h /www")
	c.mustCube("wait", "web", "--for", "running", "--timeout", "120s")
	if out := c.mustCube("exec", "web", "--", "uname", "-r"); strings.TrimSpace(out) != release {
		t.Errorf("exec uname -r = %q; want %q", out, release)
	}
	if out, _, code := c.cube("hello-stdin", "exec", "-i", "web", "--", "cat"); code != 0 || out != "hello-stdin" {
		t.Errorf("exec -i cat = %q, %d; want the stdin echoed", out, code)
	}
	if _, _, code := c.cube("", "exec", "web", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("exec exit 7: cube exited %d; want 7", code)
	}
	c.eventually(20*time.Second, "logs show the start line", func() error {
		if out, _, _ := c.cube("", "logs", "web"); !strings.Contains(out, "started") {
			return fmt.Errorf("logs = %q", out)
		}
		return nil
	})
	var body string
	c.eventually(30*time.Second, "the published port answers over HTTP", func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return nil
	})
	if strings.TrimSpace(body) != "hello-vm" {
		t.Errorf("GET / = %q; want hello-vm", body)
	}
	if ps := c.mustCube("ps"); !strings.Contains(ps, "microvm/") {
		t.Errorf("ps = %q; want the RUNTIME column to say microvm/<accel>", ps)
	}

	// A second VM reaches the first by IP, as runc instances do.
	ip := strings.TrimSpace(c.mustCube("get", "web", "-o", "jsonpath={.status.ip}"))
	out = c.mustCube("run", "--runtime", "microvm", "--restart", "never", "--attach", "--name", "client", "busybox", "--",
		"sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 "$0" 80`, ip)
	if !strings.Contains(out, "hello-vm") {
		t.Errorf("a second VM fetching http://%s/ got %q; want hello-vm", ip, out)
	}

	// The jail: the VMM runs as an unprivileged uid of its own, with no
	// capabilities, no new privileges and QEMU's seccomp filter.
	pid := c.vmmOf(t, "web")
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for line := range strings.Lines(string(status)) {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	uids := strings.Fields(fields["Uid"])
	if len(uids) == 0 || uids[0] == "0" || fields["CapEff"] != "0000000000000000" || fields["CapPrm"] != "0000000000000000" ||
		fields["CapBnd"] != "0000000000000000" || fields["NoNewPrivs"] != "1" || fields["Seccomp"] != "2" {
		t.Errorf("vmm %d: Uid %q CapEff %q CapPrm %q CapBnd %q NoNewPrivs %q Seccomp %q; want a non-root uid, no capabilities, no_new_privs and a seccomp filter",
			pid, fields["Uid"], fields["CapEff"], fields["CapPrm"], fields["CapBnd"], fields["NoNewPrivs"], fields["Seccomp"])
	}
	// Its root is the jail's: no host file is there (the positive
	// control: its own kernel is).
	root := fmt.Sprintf("/proc/%d/root", pid)
	for _, host := range []string{"etc/passwd", "root", "var/lib/cube", "tmp"} {
		if _, err := os.Stat(root + "/" + host); err == nil {
			t.Errorf("vmm %d sees the host's /%s; want only its jail", pid, host)
		}
	}
	if _, err := os.Stat(root + "/vm/vmlinux"); err != nil {
		t.Errorf("vmm %d's root lacks its kernel /vm/vmlinux (%v): the check above proves nothing", pid, err)
	}

	// The VM's control sockets (the guest agent's ttRPC port and QEMU's
	// QMP) refuse a local user: either would run anything in the guest
	// or stop, migrate or reconfigure the VM. Nor can that user read the
	// writable layer or the console.
	uid := strings.TrimSpace(c.mustCube("get", "web", "-o", "jsonpath={.metadata.uid}"))
	dir := filepath.Join(c.dataDir, "node", "instances", uid, "sandbox")
	socketRefusesNobody(t, filepath.Join(dir, "agent.sock"))
	socketRefusesNobody(t, filepath.Join(dir, "vmm", "qmp.sock"))
	fileRefusesNobody(t, filepath.Join(dir, "disk.img"))
	fileRefusesNobody(t, filepath.Join(dir, "console.log"))
}

// TestMicroVMKillVMM: a VMM killed with SIGKILL ends its instance's
// containers with reason VMMExited, and restartPolicy Always brings the
// instance back in a new VM with the same IP and writable layer.
func TestMicroVMKillVMM(t *testing.T) {
	c := startCluster(t)
	c.requireMicroVM(t)
	c.mustCube("image", "import", imagetest.BuildBusybox(t, "", imagetest.WithRef("busybox")))
	c.mustCube("run", "--runtime", "microvm", "--name", "app", "busybox", "--", "sh", "-c", "echo run >> /runs; sync; echo synced; exec sleep 600")
	c.mustCube("wait", "app", "--for", "running", "--timeout", "120s")
	c.eventually(30*time.Second, "the first run synced its file", func() error {
		if out, _, _ := c.cube("", "logs", "app"); !strings.Contains(out, "synced") {
			return fmt.Errorf("logs = %q", out)
		}
		return nil
	})
	ip := strings.TrimSpace(c.mustCube("get", "app", "-o", "jsonpath={.status.ip}"))
	old := c.vmmOf(t, "app")
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.eventually(120*time.Second, "the instance runs again in a new VM", func() error {
		var in v1.Instance
		if err := json.Unmarshal([]byte(c.mustCube("get", "app", "-o", "json")), &in); err != nil {
			return err
		}
		if in.Status.Phase != v1.PhaseRunning || len(in.Status.Containers) != 1 || in.Status.Containers[0].State != v1.ContainerRunning || in.Status.Containers[0].RestartCount < 1 {
			return fmt.Errorf("status %s %+v", in.Status.Phase, in.Status.Containers)
		}
		return nil
	})
	if pid := c.vmmOf(t, "app"); pid == old {
		t.Errorf("the instance still reports the killed vmm %d", old)
	}
	if got := strings.TrimSpace(c.mustCube("get", "app", "-o", "jsonpath={.status.ip}")); got != ip {
		t.Errorf("IP after the restart = %q; want %q kept", got, ip)
	}
	if out := c.mustCube("exec", "app", "--", "cat", "/runs"); strings.Count(out, "run") != 2 {
		t.Errorf("/runs after the restart = %q; want two runs (the writable layer kept)", out)
	}
	if ev := c.mustCube("events", "app"); !strings.Contains(ev, "VMMExited") {
		t.Errorf("events of app = %q; want one saying VMMExited", ev)
	}
}

// TestMicroVMTenantDefault: a tenant without the runc grant gets microvm,
// is refused runc naming the grant, and its VM cannot reach another
// tenant's VM.
func TestMicroVMTenantDefault(t *testing.T) {
	c := startCluster(t)
	c.requireMicroVM(t)
	ref := "cube.test/busybox:vm"
	archive := imagetest.BuildBusybox(t, "", imagetest.WithRef(ref))
	alpha := strings.TrimSpace(c.mustCube("tenant", "create", "alpha"))
	beta := strings.TrimSpace(c.mustCube("tenant", "create", "beta"))
	for _, tok := range []string{alpha, beta} {
		c.mustCubeAs(tok, "image", "import", archive)
	}
	if _, errOut, code := c.cubeAs(alpha, "run", "--runtime", "runc", "--name", "r", ref, "--", "true"); code == 0 || !strings.Contains(errOut, "--allow-runtime runc") {
		t.Errorf("alpha's run --runtime runc: exit %d, %q; want it refused naming the grant", code, errOut)
	}
	c.mustCubeAs(alpha, "run", "--name", "a1", "--memory", "64Mi", ref, "--", "sh", "-c", "mkdir -p /www && echo alpha > /www/index.html && exec httpd -f -p 8080 -h /www")
	c.mustCubeAs(beta, "run", "--name", "b1", "--memory", "64Mi", ref, "--", "sleep", "600")
	for _, x := range []struct{ tok, name string }{{alpha, "a1"}, {beta, "b1"}} {
		c.mustCubeAs(x.tok, "wait", x.name, "--for", "running", "--timeout", "120s")
		if rt := c.mustCubeAs(x.tok, "get", x.name, "-o", "jsonpath={.spec.runtime}"); strings.TrimSpace(rt) != "microvm" {
			t.Errorf("%s's runtime = %q; want microvm, the default of a tenant without grants", x.name, rt)
		}
	}
	ip := strings.TrimSpace(c.mustCubeAs(alpha, "get", "a1", "-o", "jsonpath={.status.ip}"))
	fetch := `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "$0" 8080`
	// Positive control: alpha's own exec inside a1 reaches its server
	// (once httpd listens).
	c.eventually(30*time.Second, "a1's server answers a1 itself", func() error {
		if out, errOut, code := c.cubeAs(alpha, "exec", "a1", "--", "sh", "-c", fetch, "127.0.0.1"); code != 0 || !strings.Contains(out, "alpha") {
			return fmt.Errorf("a1 -> its own server: %q %q, exit %d", out, errOut, code)
		}
		return nil
	})
	if out, _, code := c.cubeAs(beta, "exec", "b1", "--", "sh", "-c", fetch, ip); code == 0 || strings.Contains(out, "alpha") {
		t.Errorf("beta's VM -> alpha's VM %s:8080 = %q, exit %d; want no connection", ip, out, code)
	}
}

// TestMicroVMSurvivesCubeUp: kill -9 of all of cube up (the node agent
// with it) leaves the VM running, and the next cube up adopts it: same
// VMM, same IP, exec still works.
func TestMicroVMSurvivesCubeUp(t *testing.T) {
	c := startCluster(t)
	c.requireMicroVM(t)
	c.mustCube("image", "import", imagetest.BuildBusybox(t, "", imagetest.WithRef("busybox")))
	c.mustCube("run", "--runtime", "microvm", "--name", "keep", "busybox", "--", "sleep", "600")
	c.mustCube("wait", "keep", "--for", "running", "--timeout", "120s")
	vmm, ip := c.vmmOf(t, "keep"), strings.TrimSpace(c.mustCube("get", "keep", "-o", "jsonpath={.status.ip}"))
	c.kill9()
	if err := syscall.Kill(vmm, 0); err != nil {
		t.Fatalf("the vmm %d died with cube up: %v", vmm, err)
	}
	c.start()
	c.mustCube("wait", "keep", "--for", "running", "--timeout", "60s")
	if now := c.vmmOf(t, "keep"); now != vmm {
		t.Errorf("vmm after cube up's restart = %d; want the same %d (adopted, not rebooted)", now, vmm)
	}
	if got := strings.TrimSpace(c.mustCube("get", "keep", "-o", "jsonpath={.status.ip}")); got != ip {
		t.Errorf("IP after cube up's restart = %q; want %q", got, ip)
	}
	if out := c.mustCube("exec", "keep", "--", "echo", "still-here"); strings.TrimSpace(out) != "still-here" {
		t.Errorf("exec after the adoption = %q", out)
	}
}
