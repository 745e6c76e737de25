package apiserver

import (
	"fmt"
	"net/http"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
)

// TestRequestsOverflowRefused: an instance whose containers' quantities
// would overflow its summed requests is refused. Before, four containers
// of memory MaxInt64/2 plus one of 8Mi summed to 8Mi-4 bytes: the instance
// was admitted under a 1Gi memory quota, placed as an 8Mi one, and ran
// with no memory limit in four of its cgroups.
func TestRequestsOverflowRefused(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme", Quotas: map[string]v1.Quota{v1.PriorityProduction: {CPU: "1", Memory: "1Gi"}}})
	for _, c := range []struct {
		name, field string
		res         []v1.Resources
	}{
		{"memory", "spec.containers[0].resources.memory", []v1.Resources{
			{CPU: "10m", Memory: "4611686018427387903"}, {CPU: "10m", Memory: "4611686018427387903"},
			{CPU: "10m", Memory: "4611686018427387903"}, {CPU: "10m", Memory: "4611686018427387903"}, {CPU: "10m", Memory: "8Mi"}}},
		{"cpu", "spec.containers[0].resources.cpu", []v1.Resources{
			{CPU: "9223372036854775807m", Memory: "4Mi"}, {CPU: "9223372036854775807m", Memory: "4Mi"}, {CPU: "12m", Memory: "4Mi"}}},
	} {
		in := inst("ovf-"+c.name, func(in *v1.Instance) {
			in.Spec.Containers = nil
			for i, r := range c.res {
				in.Spec.Containers = append(in.Spec.Containers, v1.Container{Name: fmt.Sprintf("c%d", i), Image: "busybox", Resources: r})
			}
		})
		wantRefusal(t, ss.do(acme, "POST", "/v1/instances", in), http.StatusUnprocessableEntity, c.field, "at most")
	}
	// The positive control: the same shape at sane sizes is admitted.
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("sane", nil))
}
