package cli

import (
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
)

func TestRuntimesText(t *testing.T) {
	for _, tc := range []struct {
		st   v1.NodeStatus
		want string
	}{
		{v1.NodeStatus{Runtimes: []string{"microvm", "runc"}, GuestKernel: "ready"}, "microvm,runc"},
		{v1.NodeStatus{Runtimes: []string{"runc"}, GuestKernel: "building 42%"}, "runc (microvm: kernel building 42%)"},
		{v1.NodeStatus{Runtimes: []string{"runc"}}, "runc"},
		{v1.NodeStatus{}, "-"},
	} {
		if got := runtimesText(tc.st); got != tc.want {
			t.Errorf("runtimesText(%+v) = %q; want %q", tc.st, got, tc.want)
		}
	}
	if got := runtimeText(&v1.Instance{Spec: v1.InstanceSpec{Runtime: "microvm"}, Status: v1.InstanceStatus{Accelerator: "tcg"}}); got != "microvm/tcg" {
		t.Errorf("runtimeText = %q; want microvm/tcg", got)
	}
}

func TestWarmText(t *testing.T) {
	if got := warmText(nil); got != "-" {
		t.Errorf("warmText(nil) = %q; want -", got)
	}
	if got := warmText([]v1.TemplateStatus{{Size: "1x324M", Warm: 2}, {Size: "1x84M", Warm: 1}, {Size: "2x580M"}}); got != "3" {
		t.Errorf("warmText = %q; want 3", got)
	}
}

func TestTemplatesText(t *testing.T) {
	for _, c := range []struct {
		in   []v1.TemplateStatus
		want string
	}{
		{nil, "-"},
		{[]v1.TemplateStatus{{Size: "1x324M", State: "building"}}, "0/1"},
		{[]v1.TemplateStatus{{Size: "1x128M", State: "ready"}, {Size: "1x324M", State: "failed: no kvm"}, {Size: "2x580M", State: "ready"}}, "2/3 (1x128M,2x580M)"},
	} {
		if got := templatesText(c.in); got != c.want {
			t.Errorf("templatesText(%+v) = %q, want %q", c.in, got, c.want)
		}
	}
}
