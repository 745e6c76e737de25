package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
)

// TestRehearsalReset: a rehearsal Setup and its container are undone by
// Reset, leaving no process, mount, cgroup, file or address behind; a
// real Setup then works as on a fresh agent and sees nothing of the
// rehearsal, and a real Setup can never be reset.
func TestRehearsalReset(t *testing.T) {
	vm := startAgent(t)
	if err := vm.c.Reset(ctx(t)); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Reset before Setup = %v; want ErrConflict", err)
	}
	ns := fmt.Sprint(vm.cmd.Process.Pid)
	link := func() string {
		t.Helper()
		out, err := exec.Command("nsenter", "-t", ns, "-n", "ip", "-o", "link", "show", "eth0").CombinedOutput()
		if err != nil {
			t.Fatalf("ip link: %v: %s", err, out)
		}
		addrs, _ := exec.Command("nsenter", "-t", ns, "-n", "ip", "-o", "addr", "show", "eth0").CombinedOutput()
		// A link once up keeps the qdisc the kernel gave it: no state
		// of an instance's.
		return qdisc.ReplaceAllString(string(out), "") + string(addrs)
	}
	before := link()

	warm := baseSetup(sh("warm", "echo rehearsed > /left-behind; sleep 1000"))
	warm.Rehearsal = true
	if err := vm.c.Setup(ctx(t), warm); err != nil {
		t.Fatalf("rehearsal Setup: %v", err)
	}
	if _, err := vm.c.Start(ctx(t), "warm"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := vm.c.Exec(ctx(t), &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "warm", ExecId: "e1"}, Args: []string{"sleep", "1000"}}); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	cgroups := []string{filepath.Join("/sys/fs/cgroup/memory", vm.cg), filepath.Join("/sys/fs/cgroup/pids", vm.cg)}
	if _, err := os.Stat(cgroups[0]); err != nil {
		t.Fatalf("no sandbox cgroup after Setup: %v", err)
	}
	if m := stateMounts(t, vm); len(m) == 0 {
		t.Fatal("no mounts under the state dir after Setup")
	}

	if err := vm.c.Reset(ctx(t)); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if m := stateMounts(t, vm); len(m) > 0 {
		t.Errorf("mounts left after Reset: %v", m)
	}
	for _, cg := range cgroups {
		if _, err := os.Stat(cg); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s left after Reset (%v)", cg, err)
		}
	}
	if ents, _ := os.ReadDir(vm.state); len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("state dir holds %v after Reset", names)
	}
	if after := link(); after != before {
		t.Errorf("eth0 after Reset:\n%s\nwant it as before Setup:\n%s", after, before)
	}
	if info, err := vm.c.Hello(ctx(t)); err != nil || info.SetupDone {
		t.Errorf("Hello after Reset = %+v, %v; want setup not done", info, err)
	}
	if _, err := vm.c.Start(ctx(t), "warm"); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Start of the rehearsal's container after Reset = %v; want ErrConflict", err)
	}

	// The instance: the same drives, nothing of the rehearsal's.
	if err := vm.c.Setup(ctx(t), baseSetup(sh("app", "test -e /left-behind && echo leaked || echo clean; ps -o comm | grep -c sleep; hostname"))); err != nil {
		t.Fatalf("Setup after Reset: %v", err)
	}
	if _, err := vm.c.Start(ctx(t), "app"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	p := agentapi.Process{Container: "app"}
	if got := readAll(t, vm, p, agentapi.Stream_STREAM_STDOUT); got != "clean\n0\nvm-test\n" {
		t.Errorf("the instance's container printed %q; want clean, no sleep and its hostname", got)
	}
	if st, err := vm.c.Wait(ctx(t), p); err != nil || st.Code != 0 {
		t.Errorf("Wait = %+v, %v", st, err)
	}
	if !strings.Contains(link(), "10.88.0.5/24") {
		t.Errorf("eth0 lacks the instance's address:\n%s", link())
	}
	if err := vm.c.Reset(ctx(t)); !errors.Is(err, errdefs.ErrForbidden) {
		t.Errorf("Reset of a real Setup = %v; want ErrForbidden", err)
	}
	if info, err := vm.c.Hello(ctx(t)); err != nil || !info.SetupDone {
		t.Errorf("Hello after a refused Reset = %+v, %v; want setup done", info, err)
	}
}

var qdisc = regexp.MustCompile(`qdisc \S+ `)

// stateMounts are the agent's mounts below its state dir.
func stateMounts(t *testing.T, vm *testVM) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mounts", vm.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 2 && strings.HasPrefix(f[1], vm.state+"/") {
			out = append(out, f[1]+" "+f[2])
		}
	}
	return out
}
