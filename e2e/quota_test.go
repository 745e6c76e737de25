package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/image/imagetest"
)

// TestQuotaAdmission refuses an instance over its tenant's band quota at
// once with 429 and a message naming the quota, its limit and its use,
// also when requests race for the last slot.
func TestQuotaAdmission(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	ref := pushBusybox(t)
	tok := strings.TrimSpace(c.mustCube("tenant", "create", "acme", "--allow-runtime", "runc", "--quota", "batch=cpu=1,instances=3"))
	acme := client.New(c.client.Server(), tok)
	// A tenant may not pull from a loopback registry (see
	// security_images_test.go); it imports the same image instead.
	if err := importAs(ctx, acme, imagetest.BuildBusybox(t, "", imagetest.WithRef(ref))); err != nil {
		t.Fatal(err)
	}
	mk := func(name, cpu string) *v1.Instance {
		return &v1.Instance{Metadata: v1.ObjectMeta{Name: name}, Spec: v1.InstanceSpec{Priority: "batch",
			Containers: []v1.Container{{Image: ref, Command: []string{"sleep", "600"}, Resources: v1.Resources{CPU: cpu, Memory: "16Mi"}}}}}
	}
	if _, err := acme.CreateInstance(ctx, mk("big", "2")); err == nil {
		t.Fatal("an instance above the cpu quota was admitted")
	} else if ae := apiError(t, err); ae.Status != 429 || ae.Code != "QuotaExceeded" ||
		!strings.Contains(ae.Message, "cpu quota for tenant acme band batch: limit 1") {
		t.Errorf("over cpu quota: %d %s %q; want 429 QuotaExceeded naming the cpu quota and its limit", ae.Status, ae.Code, ae.Message)
	}
	// Five racing requests for three instance slots: exactly three win.
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted, refused := 0, 0
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := acme.CreateInstance(ctx, mk("job-"+string(rune('a'+i)), "100m"))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				admitted++
			} else if ae := apiError(t, err); ae.Status == 429 && strings.Contains(ae.Message, "instances quota") {
				refused++
			} else {
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	if admitted != 3 || refused != 2 {
		t.Errorf("admitted %d, refused %d; want 3 and 2", admitted, refused)
	}
	// Another band is not limited.
	in := mk("prod", "2")
	in.Spec.Priority = "production"
	if _, err := acme.CreateInstance(ctx, in); err != nil {
		t.Errorf("production instance refused: %v", err)
	}
	// Cleanup goes through the tenant's own token.
	for _, n := range []string{"job-a", "job-b", "job-c", "job-d", "job-e", "prod"} {
		_ = acme.DeleteInstance(ctx, n, true)
	}
	for _, n := range []string{"job-a", "job-b", "job-c", "job-d", "job-e", "prod"} {
		_, _ = acme.WaitInstance(ctx, n, []string{"deleted"}, 60e9)
	}
}
