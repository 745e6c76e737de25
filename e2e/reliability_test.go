package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cube-platform/cube/apiserver"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/network"
	"github.com/cube-platform/cube/store"
)

// instanceTraces lists what of instance uid is left on this host: its
// state dir, pinned network namespace, cgroups, and any process (its shim,
// its containers) whose command line or cgroup names the UID.
func instanceTraces(dataDir, uid string) []string {
	var left []string
	for _, p := range []string{
		filepath.Join(dataDir, "node", "instances", uid),
		filepath.Join(network.DefaultNetNSDir, uid),
	} {
		if _, err := os.Lstat(p); err == nil {
			left = append(left, p)
		}
	}
	for _, pat := range []string{"/sys/fs/cgroup/*/cube/" + uid, "/sys/fs/cgroup/cube/" + uid} {
		m, _ := filepath.Glob(pat)
		left = append(left, m...)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmd, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		cg, _ := os.ReadFile(filepath.Join(p, "cgroup"))
		if strings.Contains(string(cmd), uid) || strings.Contains(string(cg), uid) {
			left = append(left, fmt.Sprintf("process %s (%s)", filepath.Base(p), strings.ReplaceAll(string(cmd), "\x00", " ")))
		}
	}
	return left
}

// controlPlaneOnly serves the cluster's API from its data dir with no
// node agent: what a node sees when it is partitioned or its agent is
// stopped while the control plane carries on. The caller stops it.
func (c *cluster) controlPlaneOnly(t *testing.T) func() {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := store.StartEmbedded(ctx, filepath.Join(c.dataDir, "etcd"), log)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := image.NewLocalStore(filepath.Join(c.dataDir, "images"), log)
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	api, err := apiserver.New(apiserver.Config{Listen: c.listen, Store: store.New(e.Client), Images: imgs, Log: log})
	if err == nil {
		err = api.Start(ctx)
	}
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	return func() { _ = api.Close(); e.Close() }
}

// TestForceDeleteWhileNodeDown: cube up (and so its node agent) stops,
// its shims keep running; while the node's lease has lapsed the instance
// is force-deleted, which the API does at once, without the node. When
// the node comes back, every trace of that UID goes: no ghost shim,
// container process, network namespace, cgroup or state. The same holds
// for an instance whose shim was SIGKILLed meanwhile, leaving its
// container running with no shim.
func TestForceDeleteWhileNodeDown(t *testing.T) {
	c := startCluster(t)
	ref := pushBusybox(t)
	c.mustCube("image", "pull", ref, "--insecure")
	c.mustCube("run", "--name", "ghost", "--cpu", "0.1", ref, "--", "sh", "-c", "while true; do sleep 1; done")
	c.mustCube("run", "--name", "keep", "--cpu", "0.1", ref, "--", "sh", "-c", "while true; do sleep 1; done")
	c.mustCube("run", "--name", "orphan", "--cpu", "0.1", ref, "--", "sh", "-c", "while true; do sleep 1; done")
	c.mustCube("wait", "ghost", "--for", "running", "--timeout", "60s")
	c.mustCube("wait", "orphan", "--for", "running", "--timeout", "60s")
	c.mustCube("wait", "keep", "--for", "running", "--timeout", "60s")
	ctx := context.Background()
	ghost, err := c.client.GetInstance(ctx, "ghost")
	if err != nil {
		t.Fatal(err)
	}
	keep, err := c.client.GetInstance(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := c.client.GetInstance(ctx, "orphan")
	if err != nil {
		t.Fatal(err)
	}
	uid := ghost.Metadata.UID
	// Positive control: the checker sees a live instance's traces.
	for _, u := range []string{uid, orphan.Metadata.UID} {
		before := instanceTraces(c.dataDir, u)
		for _, want := range []string{"node/instances/" + u, network.DefaultNetNSDir, "/cube/" + u, "process "} {
			if !strings.Contains(strings.Join(before, "\n"), want) {
				t.Fatalf("traces of a running instance %v; want one with %q", before, want)
			}
		}
	}

	c.kill9()
	// The orphan's shim dies too; its container goes on without it.
	pidb, err := os.ReadFile(filepath.Join(c.dataDir, "node", "instances", orphan.Metadata.UID, "shim.pid"))
	if err != nil {
		t.Fatal(err)
	}
	shimPid, err := strconv.Atoi(strings.TrimSpace(string(pidb)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(shimPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.eventually(10*time.Second, "the orphan's shim is gone", func() error {
		if alive(shimPid) {
			return fmt.Errorf("shim %d still alive", shimPid)
		}
		return nil
	})
	if left := strings.Join(instanceTraces(c.dataDir, orphan.Metadata.UID), "\n"); !strings.Contains(left, "process ") {
		t.Fatalf("the orphan's container did not outlive its shim (traces %s); the test proves nothing", left)
	}
	stopCP := c.controlPlaneOnly(t)
	c.eventually(60*time.Second, "node e2e's lease lapses", func() error {
		nodes, err := c.client.ListNodes(ctx)
		if err != nil {
			return err
		}
		for _, n := range nodes.Items {
			if n.Metadata.Name == "e2e" && n.Status.Ready {
				return fmt.Errorf("node e2e still Ready")
			}
		}
		return nil
	})
	for _, name := range []string{"ghost", "orphan"} {
		if err := c.client.DeleteInstance(ctx, name, true); err != nil {
			stopCP()
			t.Fatalf("force delete of %s with the node down: %v", name, err)
		}
	}
	if _, err := c.client.GetInstance(ctx, "ghost"); !client.IsNotFound(err) {
		stopCP()
		t.Fatalf("after a force delete with the node down, get: %v; want not found at once", err)
	}
	// The node is down: nothing has torn the instance down yet.
	if left := instanceTraces(c.dataDir, uid); len(left) == 0 {
		stopCP()
		t.Fatalf("traces vanished before the node came back; the test proves nothing")
	}
	stopCP()

	c.start()
	c.eventually(60*time.Second, "every trace of the force-deleted instances is gone", func() error {
		for _, u := range []string{uid, orphan.Metadata.UID} {
			if left := instanceTraces(c.dataDir, u); len(left) > 0 {
				return fmt.Errorf("left of %s: %s", u, strings.Join(left, "; "))
			}
		}
		return nil
	})
	// The other instance is untouched: same shim, still running.
	c.mustCube("wait", "keep", "--for", "running", "--timeout", "30s")
	if left := instanceTraces(c.dataDir, keep.Metadata.UID); len(left) == 0 {
		t.Errorf("the instance that was not deleted lost its traces")
	}
	if out := c.mustCube("exec", "keep", "--", "echo", "alive"); strings.TrimSpace(out) != "alive" {
		t.Errorf("exec in the kept instance = %q", out)
	}
}
