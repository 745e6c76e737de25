package v1

import (
	"fmt"
	"testing"
)

// TestQuantitiesCannotOverflowSums: no quantity parses to a value that
// overflows the sums made of it. A tenant once sent four containers of
// memory 4611686018427387903 (MaxInt64/2) plus one of 8Mi: Requests()
// summed them to 8Mi-4 bytes, so the instance was admitted and placed as
// an 8Mi one while four of its cgroups had no memory limit at all. The
// same with cpu "9223372036854775807m" twice.
func TestQuantitiesCannotOverflowSums(t *testing.T) {
	for _, s := range []string{"9223372036854775807m", "1000000001m", "1000001"} {
		if n, err := ParseCPU(s); err == nil {
			t.Errorf("ParseCPU(%q) = %d; want an error (at most a million cores)", s, n)
		}
	}
	for _, s := range []string{"4611686018427387903", "9223372036854775807", "1025Ti", "1e30"} {
		if n, err := ParseMemory(s); err == nil {
			t.Errorf("ParseMemory(%q) = %d; want an error (at most 1024Ti)", s, n)
		}
	}
	// The largest accepted values, in the most containers an instance may
	// have, sum without overflow.
	in := &Instance{Metadata: ObjectMeta{Name: "big"}}
	for i := range MaxContainers {
		in.Spec.Containers = append(in.Spec.Containers, Container{Name: fmt.Sprintf("c%d", i), Image: "busybox",
			Resources: Resources{CPU: fmt.Sprintf("%dm", MaxMilliCPU), Memory: fmt.Sprint(MaxMemory)}})
	}
	in.SetDefaults()
	if err := in.Validate(); err != nil {
		t.Fatalf("Validate(%d containers at the largest quantities) = %v; want ok", MaxContainers, err)
	}
	cpu, mem := in.Requests()
	if cpu != MaxContainers*MaxMilliCPU || mem != MaxContainers*MaxMemory {
		t.Errorf("Requests() = %d, %d; want %d, %d", cpu, mem, MaxContainers*MaxMilliCPU, int64(MaxContainers)*MaxMemory)
	}
}
