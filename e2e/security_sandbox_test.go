package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
)

// sandboxDir is where the node keeps the runc sandbox of instance name.
func (c *cluster) sandboxDir(t *testing.T, name string) (uid, dir string) {
	t.Helper()
	in, err := c.client.GetInstance(context.Background(), name)
	if err != nil {
		t.Fatalf("get instance %s: %v", name, err)
	}
	uid = in.Metadata.UID
	return uid, filepath.Join(c.dataDir, "node", "instances", uid, "sandbox")
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return strings.TrimSpace(string(b))
}

// TestSecuritySandbox attacks from inside instances through the real cube
// binary: a fork bomb stops at the instance's spec.pids, dd fills only the
// instance's own spec.disk (ENOSPC), every process runs with no_new_privs,
// seccomp and without CAP_NET_RAW, and out-of-bounds values are refused
// with a 4xx naming the field.
func TestSecuritySandbox(t *testing.T) {
	c := startCluster(t)
	ref := pushBusybox(t)
	c.mustCube("image", "pull", ref, "--insecure")
	ctx := context.Background()

	t.Run("bounds", func(t *testing.T) {
		for _, tc := range []struct {
			field string
			edit  func(*v1.InstanceSpec)
			flags []string
		}{
			{"spec.pids", func(s *v1.InstanceSpec) { s.Pids = v1.MaxPids + 1 }, []string{"--pids", "100000"}},
			{"spec.pids", func(s *v1.InstanceSpec) { s.Pids = -5 }, []string{"--pids", "1"}},
			{"spec.disk", func(s *v1.InstanceSpec) { s.Disk = "1Ti" }, []string{"--disk", "1Ti"}},
			{"spec.disk", func(s *v1.InstanceSpec) { s.Disk = "lots" }, []string{"--disk", "1Ki"}},
		} {
			in := &v1.Instance{Metadata: v1.ObjectMeta{Name: "bounds"}, Spec: v1.InstanceSpec{Containers: []v1.Container{{Image: ref, Command: []string{"true"}}}}}
			tc.edit(&in.Spec)
			_, err := c.client.CreateInstance(ctx, in)
			if ae := apiError(t, err); ae.Status < 400 || ae.Status > 499 || ae.Field != tc.field {
				t.Errorf("create with %+v: %d on %q (%s); want a 4xx on %s", in.Spec, ae.Status, ae.Field, ae.Message, tc.field)
			}
			args := append(append([]string{"run", "--name", "bounds"}, tc.flags...), ref, "--", "true")
			if _, errOut, code := c.cube("", args...); code == 0 || !strings.Contains(errOut, tc.field) {
				t.Errorf("cube %s: exit %d, stderr %q; want a failure naming %s", strings.Join(args, " "), code, errOut, tc.field)
			}
		}
		// The control: in bounds is accepted, and the defaults are filled.
		c.mustCube("run", "--name", "inbounds", "--pids", "16384", "--disk", "256Gi", "--restart", "never", ref, "--", "true")
		c.mustCube("rm", "--force", "inbounds")
		c.mustCube("run", "--name", "defaults", "--restart", "never", ref, "--", "true")
		if in, err := c.client.GetInstance(ctx, "defaults"); err != nil || in.Spec.Pids != v1.DefaultPids || in.Spec.Disk != v1.DefaultDisk {
			t.Errorf("defaults: %+v, %v; want pids %d and disk %s", in.Spec, err, v1.DefaultPids, v1.DefaultDisk)
		}
		c.mustCube("rm", "--force", "defaults")
	})

	// One ordinary instance and one fork bomb, side by side.
	c.mustCube("run", "--name", "calm", "--pids", "64", "--disk", "64Mi", ref, "--", "sleep", "600")
	c.mustCube("run", "--name", "bomb", "--pids", "64", ref, "--", "sh", "-c", "b() { b | b & }; b; exec sleep 600")
	c.mustCube("wait", "calm", "--for", "running", "--timeout", "60s")
	c.mustCube("wait", "bomb", "--for", "running", "--timeout", "60s")

	t.Run("privileges", func(t *testing.T) {
		status := c.mustCube("exec", "calm", "--", "cat", "/proc/self/status")
		field := func(name string) string {
			for line := range strings.Lines(status) {
				if v, ok := strings.CutPrefix(line, name+":"); ok {
					return strings.TrimSpace(v)
				}
			}
			return ""
		}
		if field("NoNewPrivs") != "1" || field("Seccomp") != "2" {
			t.Errorf("exec'd process: NoNewPrivs %q Seccomp %q; want 1 and 2", field("NoNewPrivs"), field("Seccomp"))
		}
		capEff, err := strconv.ParseUint(field("CapEff"), 16, 64)
		if err != nil || capEff == 0 || capEff&(1<<13) != 0 { // 13: CAP_NET_RAW
			t.Errorf("CapEff %q; want a non-empty set without CAP_NET_RAW", field("CapEff"))
		}
		if _, errOut, code := c.cube("", "exec", "calm", "--", "busybox", "unshare", "-U", "true"); code == 0 || !strings.Contains(errOut, "not permitted") {
			t.Errorf("unshare -U: exit %d stderr %q; want Operation not permitted", code, errOut)
		}
	})

	t.Run("fork bomb", func(t *testing.T) {
		uid, _ := c.sandboxDir(t, "bomb")
		// cgroup v1's pids hierarchy, else the v2 unified one.
		cg := filepath.Join("/sys/fs/cgroup/pids/cube", uid)
		if _, err := os.Stat(cg); err != nil {
			cg = filepath.Join("/sys/fs/cgroup/cube", uid)
		}
		if got := readTrim(t, filepath.Join(cg, "pids.max")); got != "64" {
			t.Fatalf("pids.max of the instance = %q; want 64", got)
		}
		c.eventually(30*time.Second, "the bomb hits its bound", func() error {
			ev := readTrim(t, filepath.Join(cg, "main", "pids.events"))
			if n, _ := strconv.Atoi(strings.TrimPrefix(ev, "max ")); n == 0 {
				return fmt.Errorf("pids.events %q, pids.current %s", ev, readTrim(t, filepath.Join(cg, "pids.current")))
			}
			return nil
		})
		if n, _ := strconv.Atoi(readTrim(t, filepath.Join(cg, "pids.current"))); n > 64 {
			t.Errorf("pids.current = %d; want at most 64", n)
		}
		// The node and the other instance carry on.
		if out := c.mustCube("exec", "calm", "--", "echo", "fine"); strings.TrimSpace(out) != "fine" {
			t.Errorf("exec in another instance during the bomb = %q", out)
		}
		c.mustCube("rm", "--force", "bomb")
	})

	t.Run("disk", func(t *testing.T) {
		_, dir := c.sandboxDir(t, "calm")
		_, errOut, code := c.cube("", "exec", "calm", "--", "dd", "if=/dev/zero", "of=/fill", "bs=1M", "count=128")
		if code == 0 || !strings.Contains(errOut, "No space left on device") {
			t.Errorf("dd of 128 MiB into a 64Mi disk: exit %d stderr %q; want ENOSPC", code, errOut)
		}
		img := filepath.Join(dir, "disk.img")
		// The node makes each size's empty filesystem once and copies it.
		if tpls, _ := filepath.Glob(filepath.Join(c.dataDir, "node", "sandbox-cache", "ext4-*.img")); len(tpls) == 0 {
			t.Errorf("no cached empty filesystem under %s/node/sandbox-cache", c.dataDir)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(img, &st); err != nil {
			t.Fatalf("stat the instance's disk: %v", err)
		}
		if used := st.Blocks * 512; used > 64<<20 {
			t.Errorf("the instance's disk file uses %d bytes of the node's disk; want at most 64Mi", used)
		} else if used < 32<<20 {
			t.Errorf("the instance's disk file uses only %d bytes after dd; the writes went elsewhere", used)
		}
		if out := c.mustCube("exec", "calm", "--", "sh", "-c", "rm /fill && echo ok > /after && cat /after"); strings.TrimSpace(out) != "ok" {
			t.Errorf("after freeing space the container wrote %q; want ok", out)
		}

		// The layer survives its shim's SIGKILL: the new shim adopts it,
		// with no second loop device.
		uid, _ := c.sandboxDir(t, "calm")
		pidFile := filepath.Join(c.dataDir, "node", "instances", uid, "shim.pid")
		old, err := strconv.Atoi(readTrim(t, pidFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.eventually(60*time.Second, "a new shim runs calm", func() error {
			b, _ := os.ReadFile(pidFile)
			now, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			in, err := c.client.GetInstance(ctx, "calm")
			if err != nil {
				return err
			}
			if now == old || !alive(now) || in.Status.Phase != v1.PhaseRunning || in.Status.Containers[0].State != v1.ContainerRunning {
				return fmt.Errorf("shim %d, status %+v", now, in.Status)
			}
			return nil
		})
		if out := c.mustCube("exec", "calm", "--", "cat", "/after"); strings.TrimSpace(out) != "ok" {
			t.Errorf("after the shim was replaced /after reads %q; want ok", out)
		}
		loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		n := 0
		for _, l := range loops {
			if b, err := os.ReadFile(l); err == nil && strings.TrimSpace(string(b)) == img {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d loop devices back the instance's disk after the shim was replaced; want 1", n)
		}
		c.mustCube("rm", "--force", "calm")
		c.eventually(30*time.Second, "the disk file is removed", func() error {
			if _, err := os.Stat(img); !os.IsNotExist(err) {
				return fmt.Errorf("stat %s: %v", img, err)
			}
			return nil
		})
	})
}
