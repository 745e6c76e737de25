package e2e

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-platform/cube/internal/asuser"
)

// TestPlatformClosedToLocalUsers: a local user who is not root finds no
// way into Cube's state or control traffic. `cube up` listens on the API
// port and nothing else (no etcd client or peer port, no node agent port);
// its sockets and secrets refuse user nobody.
func TestPlatformClosedToLocalUsers(t *testing.T) {
	c := startCluster(t)
	ref := pushBusybox(t)
	c.mustCube("image", "pull", ref, "--insecure")
	c.mustCube("run", "--name", "idle", ref, "--", "sleep", "600")
	c.mustCube("wait", "idle", "--for", "running", "--timeout", "60s")

	_, apiPort, _ := net.SplitHostPort(c.listen)
	ports, err := asuser.TCPListeners(c.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 1 || strconv.Itoa(ports[0]) != apiPort {
		t.Errorf("cube up listens on TCP ports %v; want only the API's %s", ports, apiPort)
	}
	// Shims are cube processes too; none may open a port.
	procs := cubeProcesses(t)
	if len(procs) < 2 {
		t.Errorf("found cube processes %v; want cube up and the idle instance's shim", procs)
	}
	for _, pid := range procs {
		if pid == c.cmd.Process.Pid {
			continue
		}
		if ports, err := asuser.TCPListeners(pid); err == nil && len(ports) > 0 {
			t.Errorf("cube process %d (%s) listens on TCP ports %v; want none", pid, cmdline(pid), ports)
		}
	}

	shimSockets, _ := filepath.Glob(filepath.Join(c.dataDir, "node", "instances", "*", "shim.sock"))
	if len(shimSockets) == 0 {
		t.Fatal("found no shim socket under the data dir; the test no longer looks where shims are")
	}
	sockets := append([]string{
		filepath.Join(c.dataDir, "etcd", "etcd.sock"),
		filepath.Join(c.dataDir, "node", "agent.sock"),
	}, shimSockets...)
	for _, sock := range sockets {
		socketRefusesNobody(t, sock)
	}
	for _, secret := range []string{
		filepath.Join(c.dataDir, "admin.token"),
		filepath.Join(c.dataDir, "node", "token"),
		c.config,
	} {
		fileRefusesNobody(t, secret)
		if fi, err := os.Stat(secret); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v (%v); want no access for group or others", secret, fi.Mode(), err)
		}
	}
	// A pinned network namespace: an open file would keep it alive after
	// the instance is gone.
	in, err := c.client.GetInstance(context.Background(), "idle")
	if err != nil {
		t.Fatal(err)
	}
	netns := filepath.Join("/run/cube/netns", in.Metadata.UID)
	if f, err := os.Open(netns); err != nil {
		t.Errorf("root opening %s: %v; want it to work (positive control)", netns, err)
	} else {
		f.Close()
	}
	err = asuser.Do(asuser.Nobody, func() error {
		f, err := os.Open(netns)
		if err == nil {
			f.Close()
		}
		return err
	})
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("nobody opening %s: %v; want permission denied", netns, err)
	}
}

// TestUpBootFailureIsClear: a boot step that fails ends `cube up` with
// that step's error, exit status non-zero, and no panic.
func TestUpBootFailureIsClear(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir, err := os.MkdirTemp("/tmp", "cube-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command(cubeBin, "up", "--data-dir", dir, "--listen", taken.Addr().String(),
		"--config", filepath.Join(dir, "client.yaml"), "--bridge", "cubef"+randHex(2), "--subnet", "10.254.1.0/24")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("cube up on a taken port: err %v; want a non-zero exit\n%s", err, out)
	}
	if strings.Contains(string(out), "panic") || !strings.Contains(string(out), "listen on "+taken.Addr().String()) {
		t.Errorf("cube up on a taken port printed:\n%s\nwant the listen error and no panic", out)
	}
}

// cubeProcesses lists the pids whose executable is the cube or cube-shim
// under test.
func cubeProcesses(t *testing.T) []int {
	t.Helper()
	exes, _ := filepath.Glob("/proc/[0-9]*/exe")
	shimBin := filepath.Join(filepath.Dir(cubeBin), "cube-shim")
	var pids []int
	for _, exe := range exes {
		if target, err := os.Readlink(exe); err == nil && (target == cubeBin || target == shimBin) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(exe)))
			pids = append(pids, pid)
		}
	}
	return pids
}

func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.ReplaceAll(string(b), "\x00", " ")
}

// socketRefusesNobody: root dials sock (the positive control: the socket
// is real and live) and user nobody gets permission denied.
func socketRefusesNobody(t *testing.T, sock string) {
	t.Helper()
	conn, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Errorf("root dialing %s: %v; want it to work (positive control)", sock, err)
		return
	}
	conn.Close()
	err = asuser.Do(asuser.Nobody, func() error {
		conn, err := net.DialTimeout("unix", sock, 5*time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("nobody dialing %s: %v; want permission denied", sock, err)
	}
}

// fileRefusesNobody: user nobody reading path gets permission denied (a
// missing file fails too: the check would prove nothing).
func fileRefusesNobody(t *testing.T, path string) {
	t.Helper()
	err := asuser.Do(asuser.Nobody, func() error { _, err := os.ReadFile(path); return err })
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("nobody reading %s: %v; want permission denied", path, err)
	}
}
