package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
)

// TestPreemption: a production instance that fits nowhere takes the room of
// a best-effort one, which is stopped gracefully and reports why.
func TestPreemption(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	ref := pushBusybox(t)
	c.mustCube("image", "pull", ref, "--insecure")
	nodes, err := c.client.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	capCPU, _ := v1.ParseCPU(nodes.Items[0].Status.Capacity.CPU)
	// The victim takes all but 100m of the node.
	c.mustCube("run", "--name", "victim", "--priority", "best-effort", "--cpu", v1.FormatCPU(capCPU-100), ref, "--", "sleep", "600")
	c.mustCube("wait", "victim", "--for", "running", "--timeout", "60s")
	c.mustCube("run", "--name", "vip", "--priority", "production", "--cpu", "500m", ref, "--", "sleep", "600")
	c.mustCube("wait", "vip", "--for", "running", "--timeout", "90s")
	var victim *v1.Instance
	c.eventually(30*time.Second, "victim reports its preemption", func() error {
		victim, err = c.client.GetInstance(ctx, "victim")
		if err != nil {
			return err
		}
		if victim.Status.Phase != v1.PhaseFailed || victim.Status.Reason != "Preempted" || victim.Status.Preemption == nil {
			return fmt.Errorf("victim status %s %s %q", victim.Status.Phase, victim.Status.Reason, victim.Status.Message)
		}
		return nil
	})
	if victim.Status.Preemption.By != "vip" {
		t.Errorf("preempted by %q; want vip (the same tenant's preemptor is named)", victim.Status.Preemption.By)
	}
}
