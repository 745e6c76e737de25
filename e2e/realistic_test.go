package e2e

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-platform/cube/guest/kernel"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
)

// realisticWorkload is the image's /app/server.py.
//
//go:embed testdata/realistic/server.py
var realisticWorkload string

// realisticRuntimes run the same workload, in this order, in one cluster.
var realisticRuntimes = []string{"runc", "microvm"}

// realisticKnownDifferences are identity fields that differ by design,
// left out of the comparison (and logged), with the reason.
var realisticKnownDifferences = map[string]string{
	"kernel": "the host's kernel under runc, the guest's under microvm (checked against each)",
	// A VM container's PID 1 is the guest agent's container init (as with
	// docker --init), which runs the command as its child; under runc the
	// command is PID 1. So a command without a SIGTERM handler dies of
	// SIGTERM in a VM, and ignores it (until the grace's SIGKILL) under runc.
	"pid_is_1": "the guest agent's container init is PID 1 in a VM; the command itself under runc",
}

// TestRealisticImage runs a Debian-based image made of this host's own
// bash, coreutils and python3.11 (buildDebianImage) on both runtimes, and
// checks it behaves the same on each: it runs as the image's USER app
// (resolved through its /etc/passwd), shares a POSIX shared-memory block
// between two processes and with an exec, serves HTTP on a published port
// and to a second instance by IP, appends every request to a file it
// fsyncs on its writable layer, and on a graceful stop (cube rm --force:
// SIGTERM, then SIGKILL after the grace) runs its SIGTERM handler, which
// writes a marker, tells the second instance and exits 0. Everything it
// reports must be the same on both runtimes but the kernel release (the
// host's under runc, the guest's under microvm).
func TestRealisticImage(t *testing.T) {
	c := startCluster(t)
	c.requireMicroVM(t)
	archive := buildDebianImage(t)
	start := time.Now()
	c.mustCube("image", "import", archive)
	t.Logf("realistic image: imported in %s", time.Since(start).Round(time.Millisecond))

	hostRelease, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	guestRelease, err := kernel.Release(vmtest.Kernel(t))
	if err != nil {
		t.Fatal(err)
	}
	wantRelease := map[string]string{"runc": strings.TrimSpace(string(hostRelease)), "microvm": guestRelease}

	got := map[string]realisticObservation{}
	for _, rt := range realisticRuntimes {
		obs := c.runRealistic(t, rt)
		if obs.kernel != wantRelease[rt] {
			t.Errorf("%s: the workload saw kernel %q; want %q", rt, obs.kernel, wantRelease[rt])
		}
		got[rt] = obs
	}

	// The same behaviour on both: every check's output, key by key.
	runc, vm := got["runc"].checks, got["microvm"].checks
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range runc {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		if runc[k] != vm[k] {
			t.Errorf("%s differs between runtimes:\n  runc:    %s\n  microvm: %s", k, runc[k], vm[k])
		}
	}
	for k := range vm {
		if _, ok := runc[k]; !ok {
			t.Errorf("%s: only microvm has it: %s", k, vm[k])
		}
	}
	if !t.Failed() {
		for _, k := range keys {
			t.Logf("same on both runtimes: %s = %s", k, runc[k])
		}
	}
	for k, why := range realisticKnownDifferences {
		t.Logf("known difference %s (%s)", k, why)
	}
	for _, rt := range realisticRuntimes {
		t.Logf("known differences on %s: %v", rt, got[rt].known)
	}
}

// realisticObservation is what one runtime's run showed: checks holds
// every output that must be the same on both runtimes, by check name.
type realisticObservation struct {
	checks map[string]string
	kernel string
	known  []string // the realisticKnownDifferences fields, as seen
}

// runRealistic runs the workload (web-RT) and its peer (peer-RT) on
// runtime rt, checks each step, then stops web-RT gracefully.
func (c *cluster) runRealistic(t *testing.T, rt string) realisticObservation {
	t.Helper()
	obs := realisticObservation{checks: map[string]string{}}
	web, peer := "web-"+rt, "peer-"+rt
	fetch := func(name, url string) string {
		t.Helper()
		return strings.TrimSpace(c.mustCube("exec", name, "--", "python3", "-c",
			"import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())", url))
	}

	// The peer: the same image, only serving; it hears of web's SIGTERM.
	peerStart := time.Now()
	c.mustCube("run", "--runtime", rt, "--name", peer, "--memory", "128Mi", "-e", "ROLE=peer", debianImageRef)
	c.mustCube("wait", peer, "--for", "running", "--timeout", "180s")
	c.waitReport(t, peer, "listening", 180*time.Second)
	peerListening := time.Since(peerStart)
	peerIP := strings.TrimSpace(c.mustCube("get", peer, "-o", "jsonpath={.status.ip}"))

	port := freeHostPort(t)
	start := time.Now()
	c.mustCube("run", "--runtime", rt, "--name", web, "--memory", "256Mi", "-e", "NAME=web", "-e", "PEER="+peerIP+":8080",
		"-p", fmt.Sprintf("%d:8080", port), debianImageRef)
	c.mustCube("wait", web, "--for", "running", "--timeout", "180s")
	running := time.Since(start)
	reports := c.waitReport(t, web, "listening", 180*time.Second)
	listening := time.Since(start)
	if got := strings.TrimSpace(c.mustCube("get", web, "-o", "jsonpath={.spec.runtime}")); got != rt {
		t.Errorf("%s: spec.runtime = %q; want %q", web, got, rt)
	}

	// What it reported at start: who it is, and shared memory between it
	// and a spawned interpreter.
	var id struct {
		UID, GID        int
		User, Cwd, Home string
		Kernel          string
	}
	decode(t, reports["identity"], &id)
	obs.kernel = id.Kernel
	if id.UID != debianAppUID || id.GID != debianAppUID || id.User != "app" || id.Cwd != "/home/app" {
		t.Errorf("%s: identity %s; want uid and gid 1000, user app (the image's USER), cwd /home/app", web, reports["identity"])
	}
	var full map[string]any
	decode(t, reports["identity"], &full)
	for k := range realisticKnownDifferences {
		obs.known = append(obs.known, fmt.Sprintf("%s=%v", k, full[k]))
		delete(full, k)
	}
	slices.Sort(obs.known)
	b, _ := json.Marshal(full)
	obs.checks["report identity"] = string(b)
	var shm struct {
		ChildExit int    `json:"child_exit"`
		Answer    string `json:"answer"`
		DevShm    string `json:"dev_shm"`
		Owner     string `json:"file_owner"`
	}
	decode(t, reports["shm"], &shm)
	if shm.ChildExit != 0 || shm.Answer != "pong uid=1000 seen=True" || shm.DevShm != "tmpfs" || shm.Owner != "1000:1000" {
		t.Errorf("%s: shared memory %s; want the spawned process to see the block and answer in it, in a tmpfs /dev/shm", web, reports["shm"])
	}
	obs.checks["report shm"] = reports["shm"]

	// HTTP from the host through the published port, then from the peer
	// by IP: each request lands, fsynced, in the log on the writable layer.
	var body string
	c.eventually(60*time.Second, web+"'s published port answers", func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/from-host", port))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	})
	if want := `{"n": 1, "path": "/from-host", "uid": 1000}`; body != want {
		t.Errorf("%s: GET /from-host through the published port = %q; want %q", web, body, want)
	}
	obs.checks["http from host"] = body
	webIP := strings.TrimSpace(c.mustCube("get", web, "-o", "jsonpath={.status.ip}"))
	if out := fetch(peer, "http://"+webIP+":8080/from-peer"); out != `{"n": 2, "path": "/from-peer", "uid": 1000}` {
		t.Errorf("%s fetching http://%s:8080/from-peer = %q; want the second request answered", peer, webIP, out)
	} else {
		obs.checks["http from peer"] = out
	}

	// Exec: as the image's user, seeing the files and the live shared
	// memory block of the server.
	execs := []struct {
		name string
		argv []string
		want string // "" checks only that both runtimes agree
	}{
		{"id -u", []string{"id", "-u"}, "1000"},
		{"id -un", []string{"id", "-un"}, "app"},
		{"id -G", []string{"id", "-G"}, ""},
		{"whoami", []string{"whoami"}, "app"},
		{"app may not write /etc", []string{"bash", "-c", "touch /etc/app-was-here 2>&1; echo $?"},
			"touch: cannot touch '/etc/app-was-here': Permission denied\n1"},
		{"pwd and HOME", []string{"bash", "-c", `echo "$PWD $HOME"`}, ""},
		{"requests.log", []string{"cat", "/var/lib/app/requests.log"}, "1 GET /from-host\n2 GET /from-peer"},
		{"written files", []string{"stat", "-c", "%n %U:%G %a %F", "/var/lib/app", "/var/lib/app/requests.log", "/home/app/started", "/tmp/started", "/tmp"},
			"/var/lib/app app:app 750 directory\n/var/lib/app/requests.log app:app 644 regular file\n" +
				"/home/app/started app:app 644 regular file\n/tmp/started app:app 644 regular file\n/tmp root:root 1777 directory"},
		{"shm attach", []string{"python3", "-c", "from multiprocessing import shared_memory as s, resource_tracker as r\n" +
			"b = s.SharedMemory(name='cube-realistic-keep'); r.unregister(b._name, 'shared_memory')\n" +
			"print(bytes(b.buf[:30]).decode(), b.size)"}, "kept by the server for an exec 4096"},
		{"ls /dev/shm", []string{"ls", "/dev/shm"}, "cube-realistic-keep"},
		{"debian", []string{"bash", "-c", `. /etc/os-release && echo "$ID $VERSION_ID" && python3 -V`}, ""},
	}
	for _, x := range execs {
		out, errOut, code := c.cube("", append([]string{"exec", web, "--"}, x.argv...)...)
		out = strings.TrimSpace(out)
		if code != 0 || (x.want != "" && out != x.want) {
			t.Errorf("%s: exec %s = %q (stderr %q), exit %d; want %q", web, x.name, out, errOut, code, x.want)
		}
		obs.checks["exec "+x.name] = out
	}

	// A graceful stop: rm refuses a live instance, rm --force stops it with
	// SIGTERM; the handler writes its marker, tells the peer, exits 0.
	if _, errOut, code := c.cube("", "rm", web); code == 0 || !strings.Contains(errOut, "--force") {
		t.Errorf("%s: rm of a running instance: exit %d, %q; want a refusal naming --force", web, code, errOut)
	}
	follow := c.followLogs(t, web)
	stopStart := time.Now()
	c.mustCube("rm", "--force", web)
	stopped := time.Since(stopStart)
	var notify string
	c.eventually(30*time.Second, peer+" hears of "+web+"'s SIGTERM", func() error {
		logs := c.reports(peer)
		if logs["notify"] == "" {
			return fmt.Errorf("no notify report in %s's logs", peer)
		}
		notify = logs["notify"]
		return nil
	})
	if want := `{"body": {"marker": "SIGTERM after 2 requests\n", "name": "web"}, "kind": "notify"}`; notify != want {
		t.Errorf("%s: the peer was told %s; want %s", web, notify, want)
	}
	obs.checks["sigterm notify"] = notify
	c.eventually(30*time.Second, web+"'s last log lines reach a follower", func() error {
		last := parseReports(follow.String())
		if last["exit"] == "" {
			return fmt.Errorf("followed logs: %q", follow.String())
		}
		obs.checks["report sigterm"] = last["sigterm"]
		obs.checks["report exit"] = last["exit"]
		return nil
	})
	t.Logf("%s: web Running %s after run, serving %s after run (after its identity and shared-memory reports); "+
		"peer serving %s after run; web's rm --force (graceful) took %s", rt, running.Round(time.Millisecond),
		listening.Round(time.Millisecond), peerListening.Round(time.Millisecond), stopped.Round(time.Millisecond))
	c.mustCube("rm", "--force", peer)
	return obs
}

// waitReport waits for instance name to log a report of kind, and
// returns its reports by kind.
func (c *cluster) waitReport(t *testing.T, name, kind string, timeout time.Duration) map[string]string {
	t.Helper()
	var reports map[string]string
	c.eventually(timeout, name+" reports "+kind, func() error {
		reports = c.reports(name)
		if reports[kind] == "" {
			out, _, _ := c.cube("", "logs", name)
			return fmt.Errorf("logs: %q", out)
		}
		return nil
	})
	return reports
}

// reports returns the "report {json}" lines of name's logs by kind.
func (c *cluster) reports(name string) map[string]string {
	out, _, _ := c.cube("", "logs", name)
	return parseReports(out)
}

func parseReports(logs string) map[string]string {
	m := map[string]string{}
	for line := range strings.Lines(logs) {
		js, ok := strings.CutPrefix(strings.TrimSpace(line), "report ")
		if !ok {
			continue
		}
		var r struct{ Kind string }
		if json.Unmarshal([]byte(js), &r) == nil && r.Kind != "" {
			m[r.Kind] = js
		}
	}
	return m
}

// followLogs runs `cube logs -f name` until the test ends, collecting
// its output.
func (c *cluster) followLogs(t *testing.T, name string) *lockedBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var buf lockedBuffer
	cmd := exec.CommandContext(ctx, cubeBin, "logs", "-f", name)
	cmd.Env = append(os.Environ(), "CUBE_CONFIG="+c.config)
	cmd.Stdout = &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	// The follower must be attached before the stop begins.
	c.eventually(30*time.Second, "cube logs -f "+name+" streams", func() error {
		if !strings.Contains(buf.String(), `"kind": "listening"`) {
			return fmt.Errorf("followed so far: %q", buf.String())
		}
		return nil
	})
	return &buf
}

// lockedBuffer is a bytes.Buffer safe for one writer and many readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // protected by mu
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

func decode(t *testing.T, js string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(js), v); err != nil {
		t.Fatalf("report %q: %v", js, err)
	}
}
