package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/image/imagetest"
	"github.com/cube-platform/cube/shim"
)

// pushBusybox builds the busybox test image and serves it from a real
// registry on loopback; it returns the reference to pull.
func pushBusybox(t testing.TB) string {
	t.Helper()
	reg := imagetest.StartRegistry(t)
	ref := reg + "/busybox:v1"
	imagetest.Push(t, imagetest.BusyboxImage(t), ref)
	return ref
}

func TestRunEndToEnd(t *testing.T) {
	c := startCluster(t)
	ref := pushBusybox(t)
	c.mustCube("image", "pull", ref, "--insecure")
	if out := c.mustCube("image", "ls"); !strings.Contains(out, "busybox") {
		t.Fatalf("image ls = %q; want the pulled image", out)
	}

	port := freeHostPort(t) // host ports may not be in the ephemeral range
	script := `mkdir -p /www && echo hello-cube > /www/index.html && echo started $GREETING && exec httpd -f -p 80 -h /www`
	name := strings.TrimSpace(c.mustCube("run", "--name", "web", "--cpu", "0.5", "--memory", "64Mi", "-e", "GREETING=hi",
		"-p", fmt.Sprintf("%d:80", port), ref, "--", "sh", "-c", script))
	if name != "web" {
		t.Fatalf("run printed %q; want the name web", name)
	}
	c.mustCube("wait", "web", "--for", "running", "--timeout", "60s")

	c.eventually(10*time.Second, "logs show the start line", func() error {
		out, _, _ := c.cube("", "logs", "web")
		if !strings.Contains(out, "started hi") {
			return fmt.Errorf("logs = %q", out)
		}
		return nil
	})
	if out := c.mustCube("exec", "web", "--", "sh", "-c", "echo $GREETING"); strings.TrimSpace(out) != "hi" {
		t.Errorf("exec echo $GREETING = %q; want hi", out)
	}
	if _, _, code := c.cube("", "exec", "web", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("exec exit 7: cube exited %d; want 7", code)
	}
	if out, _, code := c.cube("hello-stdin", "exec", "-i", "web", "--", "cat"); code != 0 || out != "hello-stdin" {
		t.Errorf("exec -i cat = %q, %d; want the stdin echoed", out, code)
	}
	// A terminal: the command sees a pty (the CLI needs a real terminal for
	// -t, so this goes through the client the CLI uses).
	var tty strings.Builder
	code, err := c.client.Exec(context.Background(), "web", v1.ExecRequest{Command: []string{"sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty"}, TTY: true}, nil, &tty, &tty, nil)
	if err != nil || code != 0 || strings.TrimSpace(tty.String()) != "is-a-tty" {
		t.Errorf("exec with a tty: %q, %d, %v; want is-a-tty", tty.String(), code, err)
	}
	if _, errOut, code := c.cube("", "exec", "web", "--", "no-such-command"); code != 127 || !strings.Contains(errOut, "not found") {
		t.Errorf("exec of a missing command: exit %d, %q; want 127 and a message", code, errOut)
	}
	if ip := c.mustCube("get", "web", "-o", "jsonpath={.status.ip}"); !strings.HasPrefix(strings.TrimSpace(ip), "10.") {
		t.Errorf("get -o jsonpath={.status.ip} = %q; want the instance IP", ip)
	}

	var body string
	c.eventually(20*time.Second, "published port answers over HTTP", func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return nil
	})
	if strings.TrimSpace(body) != "hello-cube" {
		t.Errorf("GET / = %q; want hello-cube", body)
	}

	var in v1.Instance
	if err := json.Unmarshal([]byte(c.mustCube("get", "web", "-o", "json")), &in); err != nil {
		t.Fatal(err)
	}
	if in.Status.Phase != v1.PhaseRunning || in.Status.IP == "" || in.Status.Node != "e2e" ||
		in.Status.ScheduledAt == nil || in.Status.CreatingAt == nil || in.Status.RunningAt == nil {
		t.Fatalf("status = %+v; want Running with IP, node and phase timestamps", in.Status)
	}
	if out := c.mustCube("ps", "-q"); strings.TrimSpace(out) != "web" {
		t.Errorf("ps -q = %q; want web", out)
	}
	if out := c.mustCube("nodes"); !strings.Contains(out, "e2e") || !strings.Contains(out, "Ready") {
		t.Errorf("nodes = %q; want e2e Ready", out)
	}

	// A second instance reaches the first by IP.
	c.mustCube("run", "--name", "curl", "--restart", "never", ref, "--", "sh", "-c", "wget -q -O - http://"+in.Status.IP+"/ && sleep 600")
	c.mustCube("wait", "curl", "--for", "running", "--timeout", "60s")
	c.eventually(20*time.Second, "instance reaches instance by IP", func() error {
		out, _, _ := c.cube("", "logs", "curl")
		if !strings.Contains(out, "hello-cube") {
			return fmt.Errorf("curl logs = %q", out)
		}
		return nil
	})

	// rm refuses a live instance without --force, then removes every trace.
	if _, errOut, code := c.cube("", "rm", "web"); code == 0 || !strings.Contains(errOut, "--force") {
		t.Errorf("rm of a running instance: exit %d, stderr %q; want a refusal naming --force", code, errOut)
	}
	uid := in.Metadata.UID
	c.mustCube("rm", "--force", "web")
	if _, _, code := c.cube("", "get", "web"); code == 0 {
		t.Error("get web succeeded after rm")
	}
	assertNoTrace(t, uid)
}

// assertNoTrace checks that no process, mount, cgroup or network
// namespace of the instance is left on the host.
func assertNoTrace(t *testing.T, uid string) {
	t.Helper()
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), uid) {
		t.Errorf("a mount of instance %s is left:\n%s", uid, grepLines(string(mounts), uid))
	}
	for _, ctl := range []string{"memory", "cpu", "pids", "cpuset"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctl, "cube", uid)); err == nil {
			t.Errorf("cgroup %s/cube/%s is left", ctl, uid)
		}
	}
	if _, err := os.Stat(filepath.Join("/run/cube/netns", uid)); err == nil {
		t.Errorf("network namespace %s is left", uid)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), uid) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			t.Errorf("process %d of instance %s is left: %q", pid, uid, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestSurvivesKill9 kills `cube up` while two instances run: they keep
// running, and after a restart both are Running again and no third exists.
func TestSurvivesKill9(t *testing.T) {
	c := startCluster(t)
	ref := pushBusybox(t)
	c.mustCube("image", "pull", ref, "--insecure")
	for _, n := range []string{"one", "two"} {
		c.mustCube("run", "--name", n, ref, "--", "sh", "-c", "echo up; while true; do sleep 1; done")
		c.mustCube("wait", n, "--for", "running", "--timeout", "60s")
	}
	ips := map[string]string{}
	for _, n := range []string{"one", "two"} {
		in, err := c.client.GetInstance(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		ips[n] = in.Status.IP
	}
	before := shimPids(t, c.dataDir)
	if len(before) != 2 {
		t.Fatalf("found %d shims; want 2", len(before))
	}
	c.kill9()
	// Once cube up is reaped, a shim tied to it (a parent-death signal,
	// its process group) would have been signalled already; each one
	// answering on its socket after that is alive and serving, which a
	// kill(pid, 0) would not tell of a zombie.
	socks, _ := filepath.Glob(filepath.Join(c.dataDir, "node", "instances", "*", "shim.sock"))
	if len(socks) != 2 {
		t.Fatalf("found shim sockets %v; want 2", socks)
	}
	for _, sock := range socks {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := shim.Dial(sock).Ping(ctx)
		cancel()
		if err != nil {
			t.Fatalf("shim at %s after cube up's kill -9: %v; want it serving", sock, err)
		}
	}
	for _, pid := range before {
		if !alive(pid) {
			t.Fatalf("shim %d died with cube up", pid)
		}
	}
	c.start()
	for _, n := range []string{"one", "two"} {
		c.mustCube("wait", n, "--for", "running", "--timeout", "60s")
	}
	list, err := c.client.ListInstances(context.Background(), clientListAll())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 {
		t.Fatalf("after restart there are %d instances; want 2", len(list.Items))
	}
	for _, in := range list.Items {
		if in.Status.Phase != v1.PhaseRunning || in.Status.IP != ips[in.Metadata.Name] {
			t.Errorf("%s: phase %s ip %s; want Running with ip %s", in.Metadata.Name, in.Status.Phase, in.Status.IP, ips[in.Metadata.Name])
		}
		for _, cs := range in.Status.Containers {
			if cs.RestartCount != 0 {
				t.Errorf("%s restarted %d times; the kill must not touch it", in.Metadata.Name, cs.RestartCount)
			}
		}
	}
	after := shimPids(t, c.dataDir)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("shims before %v, after %v; want the same processes adopted", before, after)
	}
	if out := c.mustCube("exec", "one", "--", "echo", "still-here"); strings.TrimSpace(out) != "still-here" {
		t.Errorf("exec after restart = %q", out)
	}
}

// TestShimKill9 kills an instance's shim: the node starts a new shim, which
// clears the containers the dead one orphaned and runs the instance again,
// on the same IP, with one copy of its process and the restart counted.
func TestShimKill9(t *testing.T) {
	c := startCluster(t)
	ref := pushBusybox(t)
	c.mustCube("image", "pull", ref, "--insecure")
	token := "heal-" + randHex(4)
	c.mustCube("run", "--name", "heal", ref, "--", "sh", "-c", "echo "+token+"; while true; do sleep 1; done")
	c.mustCube("wait", "heal", "--for", "running", "--timeout", "60s")
	before, err := c.client.GetInstance(context.Background(), "heal")
	if err != nil {
		t.Fatal(err)
	}
	shims := shimPids(t, c.dataDir)
	if len(shims) != 1 {
		t.Fatalf("found %d shims; want 1", len(shims))
	}
	orphans := processesWith(token)
	if len(orphans) != 1 {
		t.Fatalf("processes running %q: %v; want 1", token, orphans)
	}
	if err := syscall.Kill(shims[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.eventually(60*time.Second, "a new shim running the instance", func() error {
		in, err := c.client.GetInstance(context.Background(), "heal")
		if err != nil {
			return err
		}
		now := shimPids(t, c.dataDir)
		if len(now) != 1 || now[0] == shims[0] || !alive(now[0]) {
			return fmt.Errorf("shims %v", now)
		}
		if in.Status.Phase != v1.PhaseRunning || len(in.Status.Containers) != 1 || in.Status.Containers[0].State != v1.ContainerRunning {
			return fmt.Errorf("status %+v", in.Status)
		}
		return nil
	})
	after, err := c.client.GetInstance(context.Background(), "heal")
	if err != nil {
		t.Fatal(err)
	}
	if after.Status.IP != before.Status.IP {
		t.Errorf("ip %s after the shim was replaced; want %s", after.Status.IP, before.Status.IP)
	}
	if rc := after.Status.Containers[0].RestartCount; rc < 1 {
		t.Errorf("restartCount %d; want the lost shim counted as a restart", rc)
	}
	if running(orphans[0]) {
		t.Errorf("the orphaned container process %d still runs", orphans[0])
	}
	if procs := processesWith(token); len(procs) != 1 {
		t.Errorf("processes running %q: %v; want exactly 1", token, procs)
	}
	if out := c.mustCube("exec", "heal", "--", "echo", "healed"); strings.TrimSpace(out) != "healed" {
		t.Errorf("exec after the shim was replaced = %q", out)
	}
	if logs := c.mustCube("logs", "heal"); strings.Count(logs, token) < 2 {
		t.Errorf("logs %q; want the output of both runs", logs)
	}
	c.eventually(10*time.Second, "a ShimLost warning", func() error {
		out := c.mustCube("events", "heal", "--types", "Warning")
		if !strings.Contains(out, "ShimLost") {
			return fmt.Errorf("warning events %q", out)
		}
		return nil
	})
}

// running tells whether pid is a process that is not a zombie: an orphan
// is reaped by init, which here may take its time.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// processesWith lists the running pids whose command line contains s.
func processesWith(s string) []int {
	var pids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() || !running(pid) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) && !strings.Contains(string(b), "cube\x00") {
			pids = append(pids, pid)
		}
	}
	return pids
}
