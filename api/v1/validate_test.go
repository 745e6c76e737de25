package v1

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func valid() *Instance {
	in := &Instance{Metadata: ObjectMeta{Name: "web"}, Spec: InstanceSpec{Containers: []Container{{
		Image: "busybox", Resources: Resources{CPU: "0.5", Memory: "256Mi"},
		Ports: []ContainerPort{{ContainerPort: 80, HostPort: 8080}},
	}}}}
	in.SetDefaults()
	return in
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Instance)
		field  string // "" means valid
	}{
		{"valid", func(*Instance) {}, ""},
		{"bad name", func(in *Instance) { in.Metadata.Name = "Web_1" }, "metadata.name"},
		{"negative memory", func(in *Instance) { in.Spec.Containers[0].Resources.Memory = "-1Gi" }, "spec.containers[0].resources.memory"},
		{"tiny memory", func(in *Instance) { in.Spec.Containers[0].Resources.Memory = "1Ki" }, "spec.containers[0].resources.memory"},
		{"bad cpu", func(in *Instance) { in.Spec.Containers[0].Resources.CPU = "lots" }, "spec.containers[0].resources.cpu"},
		{"zero cpu", func(in *Instance) { in.Spec.Containers[0].Resources.CPU = "0" }, "spec.containers[0].resources.cpu"},
		{"no image", func(in *Instance) { in.Spec.Containers[0].Image = " " }, "spec.containers[0].image"},
		{"no containers", func(in *Instance) { in.Spec.Containers = nil }, "spec.containers"},
		{"bad restart", func(in *Instance) { in.Spec.RestartPolicy = "Sometimes" }, "spec.restartPolicy"},
		{"negative max restarts", func(in *Instance) {
			in.Spec.RestartPolicy, in.Spec.MaxRestarts = RestartOnFailure, -1
		}, "spec.maxRestarts"},
		{"max restarts without OnFailure", func(in *Instance) { in.Spec.MaxRestarts = 3 }, "spec.maxRestarts"},
		{"pids at the bounds", func(in *Instance) { in.Spec.Pids = MaxPids }, ""},
		{"too few pids", func(in *Instance) { in.Spec.Pids = MinPids - 1 }, "spec.pids"},
		{"negative pids", func(in *Instance) { in.Spec.Pids = -1 }, "spec.pids"},
		{"too many pids", func(in *Instance) { in.Spec.Pids = MaxPids + 1 }, "spec.pids"},
		{"disk at the bound", func(in *Instance) { in.Spec.Disk = "256Gi" }, ""},
		{"disk too large", func(in *Instance) { in.Spec.Disk = "257Gi" }, "spec.disk"},
		{"disk too small", func(in *Instance) { in.Spec.Disk = "1Mi" }, "spec.disk"},
		{"disk not a size", func(in *Instance) { in.Spec.Disk = "lots" }, "spec.disk"},
		{"negative disk", func(in *Instance) { in.Spec.Disk = "-1Gi" }, "spec.disk"},
		{"bad port", func(in *Instance) { in.Spec.Containers[0].Ports[0].ContainerPort = 70000 }, "spec.containers[0].ports[0].containerPort"},
		{"bad env", func(in *Instance) { in.Spec.Containers[0].Env = []EnvVar{{Name: "1X"}} }, "spec.containers[0].env[0].name"},
		{"duplicate container", func(in *Instance) {
			in.Spec.Containers = append(in.Spec.Containers, Container{Name: "main", Image: "x", Resources: in.Spec.Containers[0].Resources})
		}, "spec.containers[1].name"},
		{"port clash across containers", func(in *Instance) {
			in.Spec.Containers[0].Name = "a"
			in.Spec.Containers = append(in.Spec.Containers, Container{Name: "b", Image: "x", Resources: in.Spec.Containers[0].Resources, Ports: []ContainerPort{{ContainerPort: 80, Protocol: "TCP"}}})
		}, "spec.containers[1].ports[0].containerPort"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := valid()
			tt.mutate(in)
			err := in.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v; want a FieldError on %s", err, tt.field)
			}
			if fe.Field != tt.field {
				t.Errorf("Validate() field = %q; want %q (%v)", fe.Field, tt.field, err)
			}
		})
	}
}

func TestQuantities(t *testing.T) {
	cpus := map[string]int64{"0.5": 500, "2": 2000, "250m": 250, "1.25": 1250}
	for s, want := range cpus {
		if got, err := ParseCPU(s); err != nil || got != want {
			t.Errorf("ParseCPU(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	mems := map[string]int64{"256Mi": 256 << 20, "1Gi": 1 << 30, "512M": 512e6, "1048576": 1 << 20, "64m": 64 << 20, "1g": 1 << 30}
	for s, want := range mems {
		if got, err := ParseMemory(s); err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1Qi", "abc", "-5Mi"} {
		if _, err := ParseMemory(bad); err == nil {
			t.Errorf("ParseMemory(%q) succeeded; want an error", bad)
		}
	}
	if got := FormatMemory(256 << 20); got != "256Mi" {
		t.Errorf("FormatMemory = %q; want 256Mi", got)
	}
	if got := FormatCPU(1500); got != "1500m" {
		t.Errorf("FormatCPU(1500) = %q; want 1500m", got)
	}
}

// TestOpenAPIMatchesTypes keeps the generated document and the wire types in
// step: every JSON key a fully populated Instance encodes must appear in the
// schema at the same place.
func TestOpenAPIMatchesTypes(t *testing.T) {
	doc := OpenAPI()
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	in := valid()
	in.Metadata.Labels = map[string]string{"a": "b"}
	in.Spec.Containers[0].Env = []EnvVar{{Name: "A", Value: "b"}}
	in.Spec.Containers[0].Command = []string{"sh"}
	in.Status.Containers = []ContainerStatus{{Name: "main", Reason: "x", Signal: 9, OOMKilled: true,
		LastExit: &ContainerExit{ExitCode: 1, Signal: 9, OOMKilled: true, Reason: "Error"}}}
	in.Status.Reason, in.Status.Node, in.Status.IP = "r", "n", "1.2.3.4"
	b, _ := json.Marshal(in)
	var obj map[string]any
	_ = json.Unmarshal(b, &obj)
	var walk func(path string, v any, schema map[string]any)
	walk = func(path string, v any, schema map[string]any) {
		if ref, ok := schema["$ref"].(string); ok {
			schema = schemas[strings.TrimPrefix(ref, "#/components/schemas/")].(map[string]any)
		}
		switch x := v.(type) {
		case map[string]any:
			if ap, ok := schema["additionalProperties"].(map[string]any); ok {
				for k, vv := range x {
					walk(path+"."+k, vv, ap)
				}
				return
			}
			props, _ := schema["properties"].(map[string]any)
			for k, vv := range x {
				ps, ok := props[k].(map[string]any)
				if !ok {
					t.Errorf("field %s.%s is encoded but missing from the OpenAPI schema", path, k)
					continue
				}
				walk(path+"."+k, vv, ps)
			}
		case []any:
			for _, vv := range x {
				walk(path+"[]", vv, schema["items"].(map[string]any))
			}
		}
	}
	walk("Instance", obj, map[string]any{"$ref": "#/components/schemas/Instance"})
	code := 137
	b, _ = json.Marshal(Event{Metadata: ObjectMeta{Name: "web.1", Tenant: "t"}, Instance: "web", InstanceUID: "u", Type: EventWarning,
		Reason: "Exited", Message: "m", Node: "n", Container: "main", ExitCode: &code, Signal: 9, OOMKilled: true, RestartCount: 2})
	obj = nil
	_ = json.Unmarshal(b, &obj)
	walk("Event", obj, map[string]any{"$ref": "#/components/schemas/Event"})
	for _, p := range []string{"/v1/instances", "/v1/events"} {
		if _, ok := doc["paths"].(map[string]any)[p]; !ok {
			t.Errorf("paths lack %s", p)
		}
	}
}

// TestSandboxDefaults: an instance that leaves spec.pids and spec.disk out
// gets the defaults, and one that sets them keeps its values.
func TestSandboxDefaults(t *testing.T) {
	in := valid()
	if in.Spec.Pids != DefaultPids || in.Spec.Disk != DefaultDisk {
		t.Errorf("defaults: pids %d disk %q; want %d and %q", in.Spec.Pids, in.Spec.Disk, DefaultPids, DefaultDisk)
	}
	in.Spec.Pids, in.Spec.Disk = 64, "4Gi"
	in.SetDefaults()
	if in.Spec.Pids != 64 || in.Spec.Disk != "4Gi" {
		t.Errorf("after SetDefaults: pids %d disk %q; want 64 and 4Gi kept", in.Spec.Pids, in.Spec.Disk)
	}
}
