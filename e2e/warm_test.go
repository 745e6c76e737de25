package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/image/imagetest"
	"github.com/cube-platform/cube/sandbox/microvm"
	"github.com/cube-platform/cube/shim"
)

// waitWarm waits until the node reports a warm VM of size, after taken
// were taken, and returns the pids of the warm shims it has.
func (c *cluster) waitWarm(t *testing.T, size string, taken int) []int {
	t.Helper()
	c.eventually(2*time.Minute, "a warm "+size+" vm on the node", func() error {
		var nodes []v1.Node
		if err := json.Unmarshal([]byte(c.mustCube("nodes", "-o", "json")), &nodes); err != nil {
			return err
		}
		for _, n := range nodes {
			for _, tp := range n.Status.Templates {
				if tp.Size == size && tp.Warm > 0 && tp.WarmTaken >= taken {
					return nil
				}
			}
		}
		return fmt.Errorf("no warm vm: %+v", nodes)
	})
	return c.warmShims(t)
}

// warmShims are the pids of the warm shims serving under the data dir.
func (c *cluster) warmShims(t *testing.T) []int {
	t.Helper()
	var pids []int
	socks, _ := filepath.Glob(filepath.Join(c.dataDir, "warm", "*", "shim.sock"))
	for _, s := range socks {
		b, err := os.ReadFile(shim.FilesFor(s).Pid)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && syscall.Kill(pid, 0) == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestMicroVMWarmStart: with a warm VM ready, a create takes it over: its
// shim becomes the instance's, its VMM moves into the instance's cgroup,
// and the instance has its own identity; the node warms a replacement; a
// warm VM that cube up's kill -9 left behind is stopped by the next
// cube up, removing the instances leaves no warm VM's files, and cube up's
// stop stops the warm VMs.
func TestMicroVMWarmStart(t *testing.T) {
	c := startCluster(t)
	c.requireMicroVM(t)
	c.mustCube("image", "import", imagetest.BuildBusybox(t, "", imagetest.WithRef("busybox")))
	c.waitTemplate(t, defaultVMSize())
	warm := c.waitWarm(t, defaultVMSize(), 0)
	if len(warm) != 1 {
		t.Fatalf("warm shims %v; want the one the node keeps", warm)
	}

	var bootIDs []string
	for _, name := range []string{"w1", "w2"} {
		if name == "w2" {
			c.waitWarm(t, defaultVMSize(), 1) // w1's replacement
		}
		c.mustCube("run", "--runtime", "microvm", "--name", name, "busybox", "--", "sleep", "600")
		c.mustCube("wait", name, "--for", "running", "--timeout", "120s")
		uid, dir := c.sandboxDir(t, name)
		rec, err := microvm.ReadBootRecord(dir)
		if err != nil {
			t.Fatal(err)
		}
		if rec.From != microvm.FromWarm {
			t.Errorf("%s's vm came from %q; want a warm vm", name, rec.From)
		}
		if boot := strings.TrimSpace(c.mustCube("get", name, "-o", "jsonpath={.status.vmBoot}")); boot != "template" {
			t.Errorf("%s's status.vmBoot = %q; want template (a warm vm is a clone of the template)", name, boot)
		}
		if pids := microvm.VMMPids("/cube/" + uid); len(pids) != 1 || pids[0] != rec.VMMPid {
			t.Errorf("%s's vmm cgroup holds %v; want its vmm %d", name, pids, rec.VMMPid)
		}
		if host := strings.TrimSpace(c.mustCube("exec", name, "--", "hostname")); host != name {
			t.Errorf("%s's hostname is %q", name, host)
		}
		bootIDs = append(bootIDs, strings.TrimSpace(c.mustCube("exec", name, "--", "cat", "/proc/sys/kernel/random/boot_id")))
		shimPid, err := os.ReadFile(filepath.Join(c.dataDir, "node", "instances", uid, "shim.pid"))
		if err != nil {
			t.Fatal(err)
		}
		if name == "w1" && strings.TrimSpace(string(shimPid)) != strconv.Itoa(warm[0]) {
			t.Errorf("w1's shim is pid %s; want the warm shim %d that took it", shimPid, warm[0])
		}
	}
	if bootIDs[0] == bootIDs[1] {
		t.Errorf("two warm starts share boot id %s", bootIDs[0])
	}

	// A warm vm kill -9 left is stopped by the next cube up.
	left := c.waitWarm(t, defaultVMSize(), 2)
	c.kill9()
	c.start()
	c.eventually(60*time.Second, "the left warm shims gone", func() error {
		for _, pid := range left {
			if syscall.Kill(pid, 0) == nil {
				return fmt.Errorf("warm shim %d still runs", pid)
			}
		}
		return nil
	})
	c.waitWarm(t, defaultVMSize(), 0) // a new node counts anew
	for _, name := range []string{"w1", "w2"} {
		if out := strings.TrimSpace(c.mustCube("exec", name, "--", "hostname")); out != name {
			t.Errorf("%s after cube up's restart: hostname %q", name, out)
		}
		c.mustCube("rm", "-f", name)
	}
	c.eventually(60*time.Second, "no warm vm files but the idle ones'", func() error {
		vms, _ := filepath.Glob(filepath.Join(c.dataDir, "warm", "*", "warm-vm"))
		for _, vm := range vms {
			if _, err := os.Stat(filepath.Join(filepath.Dir(vm), "shim.sock")); errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s is left, and no warm shim serves beside it", vm)
			}
		}
		return nil
	})
	// A cube up that stops stops its warm VMs (instances would run on).
	idle := c.warmShims(t)
	if len(idle) == 0 {
		t.Fatal("no idle warm shim before cube up's stop")
	}
	c.stop()
	c.eventually(30*time.Second, "the warm shims stopped with cube up", func() error {
		for _, pid := range idle {
			if syscall.Kill(pid, 0) == nil {
				return fmt.Errorf("warm shim %d runs on after cube up stopped", pid)
			}
		}
		return nil
	})
}
