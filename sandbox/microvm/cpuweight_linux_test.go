package microvm

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/cpuweight"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

// TestVMWeight: the guest limits each container, but on the host the
// whole VM weighs what the instance asked for against the node's other
// instances: the sandbox's cgroup has the weight of its containers' cpu,
// and the VMM runs below it.
func TestVMWeight(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id := sandboxtest.RandomID()
	spec := sandbox.Spec{ID: id, Hostname: "h-" + id, StateDir: filepath.Join(t.TempDir(), "state"), CgroupParent: "/cube-test/" + id,
		Containers: []sandbox.ContainerSpec{sandboxtest.Shell("a", "exec sleep 600"), sandboxtest.Shell("b", "exec sleep 600")}}
	spec.Containers[0].MilliCPU, spec.Containers[1].MilliCPU = 200, 100
	for i := range spec.Containers {
		spec.Containers[i].RootFS = vmtest.Image(t)
	}
	createVM(t, ctx, vmtest.Options(t), spec)
	pids := VMMPids(spec.CgroupParent)
	if len(pids) != 1 {
		t.Fatalf("vmm pids %v; want one", pids)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pids[0]) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var cpuPath string
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		// "N:controllers:path"; v1 "cpu,cpuacct" or "cpu", v2 "".
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && (strings.Contains(","+f[1]+",", ",cpu,") || f[1] == "") && strings.HasPrefix(f[2], spec.CgroupParent+"/") {
			cpuPath = f[2]
		}
	}
	if cpuPath == "" {
		t.Fatalf("the vmm's cgroups %q: none for cpu below %s", b, spec.CgroupParent)
	}
	file, want := "/sys/fs/cgroup/cpu"+spec.CgroupParent+"/cpu.shares", cpuweight.Shares(300)
	if _, err := os.Stat("/sys/fs/cgroup/cpu"); err != nil {
		file, want = "/sys/fs/cgroup"+spec.CgroupParent+"/cpu.weight", cpuweight.Weight(300)
	}
	got, err := os.ReadFile(file)
	if err != nil || strings.TrimSpace(string(got)) != strconv.FormatUint(want, 10) {
		t.Errorf("%s = %q, %v; want %d (the weight of 300m)", file, got, err, want)
	}
}
