package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/image/imagetest"
)

func clientListAll() client.ListOptions { return client.ListOptions{} }

func shimPids(t *testing.T, dataDir string) []int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dataDir, "node", "instances", "*", "shim.pid"))
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func apiError(t *testing.T, err error) *client.APIError {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v; want an API error", err)
	}
	return ae
}

func TestBadInput(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	ref := pushBusybox(t)
	c.mustCube("image", "pull", ref, "--insecure")
	mk := func(name, img, mem string) *v1.Instance {
		return &v1.Instance{Metadata: v1.ObjectMeta{Name: name}, Spec: v1.InstanceSpec{Containers: []v1.Container{{
			Image: img, Command: []string{"sleep", "600"}, Resources: v1.Resources{Memory: mem}}}}}
	}

	t.Run("unknown image", func(t *testing.T) {
		_, err := c.client.CreateInstance(ctx, mk("a", "127.0.0.1:1/nothing:here", ""))
		ae := apiError(t, err)
		if ae.Status != 422 || ae.Field != "spec.containers[0].image" || !strings.Contains(ae.Message, "cube image pull") {
			t.Errorf("got %d %q %q; want 422 on spec.containers[0].image telling how to pull", ae.Status, ae.Field, ae.Message)
		}
	})
	t.Run("malformed reference", func(t *testing.T) {
		_, err := c.client.CreateInstance(ctx, mk("a", "Not A Ref::", ""))
		ae := apiError(t, err)
		if ae.Status != 422 || ae.Field != "spec.containers[0].image" {
			t.Errorf("got %d %q %q; want 422 on spec.containers[0].image", ae.Status, ae.Field, ae.Message)
		}
		_, errOut, code := c.cube("", "image", "pull", "UPPER CASE::bad", "--insecure")
		if code != 125 || !strings.Contains(errOut, "invalid") {
			t.Errorf("image pull of a malformed ref: exit %d, %q; want 125 and a clear message", code, errOut)
		}
	})
	t.Run("negative memory", func(t *testing.T) {
		_, errOut, code := c.cube("", "run", "--name", "neg", "--memory", "-1Gi", ref, "--", "true")
		if code != 125 || !strings.Contains(errOut, "spec.containers[0].resources.memory") {
			t.Errorf("run --memory -1Gi: exit %d, stderr %q; want 125 naming the field", code, errOut)
		}
	})
	t.Run("name taken", func(t *testing.T) {
		if _, err := c.client.CreateInstance(ctx, mk("taken", ref, "")); err != nil {
			t.Fatal(err)
		}
		_, err := c.client.CreateInstance(ctx, mk("taken", ref, ""))
		ae := apiError(t, err)
		if ae.Status != 409 || ae.Code != "AlreadyExists" {
			t.Errorf("got %d %s %q; want 409 AlreadyExists", ae.Status, ae.Code, ae.Message)
		}
	})
	t.Run("malicious archives", func(t *testing.T) {
		passwd, _ := os.ReadFile("/etc/passwd")
		for _, kind := range imagetest.Attacks() {
			t.Run(string(kind), func(t *testing.T) {
				sentinel := imagetest.PlantSentinel(t)
				f, err := os.Open(imagetest.BuildMalicious(t, "", kind, sentinel.Dir))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				name := "evil-" + string(kind)
				imgs, err := c.client.ImportImage(ctx, f)
				if err == nil {
					// The archive itself was well formed: the layer must be
					// refused when an instance first unpacks it.
					for _, img := range imgs {
						if _, err := c.client.CreateInstance(ctx, mk(name, img.Metadata.Name, "")); err != nil {
							t.Fatal(err)
						}
						in, _ := c.client.WaitInstance(ctx, name, []string{"running", "exited"}, time.Minute)
						if in == nil || in.Status.Phase != v1.PhaseFailed || !strings.Contains(in.Status.Message, "unsafe") {
							t.Errorf("instance of a malicious image: %+v; want Failed with an unsafe-layer message", in)
						}
					}
				} else {
					ae := apiError(t, err)
					if ae.Status != 400 || !strings.Contains(ae.Message, "unsafe") {
						t.Errorf("import: %d %q; want 400 naming the unsafe entry", ae.Status, ae.Message)
					}
				}
				sentinel.Check(t)
				if b, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(b, passwd) {
					t.Fatal("/etc/passwd changed")
				}
			})
		}
	})
	t.Run("missing token", func(t *testing.T) {
		resp, err := http.Get(c.client.Server() + "/v1/instances")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("no token: %d; want 401", resp.StatusCode)
		}
		_, err = client.New(c.client.Server(), "cube_forged").ListInstances(ctx, client.ListOptions{})
		if ae := apiError(t, err); ae.Status != 401 {
			t.Errorf("forged token: %d; want 401", ae.Status)
		}
	})
	t.Run("another tenant", func(t *testing.T) {
		tok := strings.TrimSpace(c.mustCube("tenant", "create", "other", "--allow-runtime", "runc"))
		other := client.New(c.client.Server(), tok)
		if _, err := other.GetInstance(ctx, "taken"); apiError(t, err).Status != 404 {
			t.Errorf("other tenant reads taken: %v; want 404", err)
		}
		if err := other.DeleteInstance(ctx, "taken", true); apiError(t, err).Status != 404 {
			t.Errorf("other tenant deletes taken: %v; want 404", err)
		}
		list, err := other.ListInstances(ctx, client.ListOptions{})
		if err != nil || len(list.Items) != 0 {
			t.Errorf("other tenant lists %d instances, %v; want 0", len(list.Items), err)
		}
		// Images are per tenant too: the admin's pull is not theirs.
		if _, err := other.CreateInstance(ctx, mk("mine", ref, "")); apiError(t, err).Status != 422 {
			t.Errorf("other tenant runs the admin's image: %v; want 422 image not found", err)
		}
		if _, err := other.ListNodes(ctx); apiError(t, err).Status != 403 {
			t.Errorf("other tenant lists nodes: %v; want 403", err)
		}
		// The admin's instance has events; the other tenant sees none.
		c.eventually(10*time.Second, "events of taken recorded", func() error {
			evs, err := c.client.ListEvents(ctx, client.EventOptions{For: "taken"})
			if err != nil || len(evs.Items) == 0 {
				return fmt.Errorf("%v, %v", evs, err)
			}
			return nil
		})
		for _, o := range []client.EventOptions{{}, {For: "taken"}} {
			if evs, err := other.ListEvents(ctx, o); err != nil || len(evs.Items) != 0 {
				t.Errorf("other tenant lists events %+v: %v, %v; want none", o, evs, err)
			}
		}
		if _, err := other.ListEvents(ctx, client.EventOptions{Types: []string{"Loud"}}); apiError(t, err).Status != 422 {
			t.Errorf("events of type Loud: %v; want 422", err)
		}
	})
}
