package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
)

func TestParseRestart(t *testing.T) {
	tests := []struct {
		in      string
		policy  v1.RestartPolicy
		max     int
		wantErr string
	}{
		{"always", v1.RestartAlways, 0, ""},
		{"unless-stopped", v1.RestartAlways, 0, ""},
		{"on-failure", v1.RestartOnFailure, 0, ""},
		{"On-Failure:5", v1.RestartOnFailure, 5, ""},
		{"no", v1.RestartNever, 0, ""},
		{"never", v1.RestartNever, 0, ""},
		{"on-failure:x", "", 0, "retry count must be a number"},
		{"on-failure:-1", "", 0, "retry count must be a number"},
		{"sometimes", "", 0, "want always, on-failure[:N] or never"},
	}
	for _, tt := range tests {
		policy, max, err := ParseRestart(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseRestart(%q) error = %v; want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || policy != tt.policy || max != tt.max {
			t.Errorf("ParseRestart(%q) = %q, %d, %v; want %q, %d", tt.in, policy, max, err, tt.policy, tt.max)
		}
	}
}

func TestParsePort(t *testing.T) {
	tests := []struct {
		in      string
		want    v1.ContainerPort
		wantErr bool
	}{
		{"8080:80", v1.ContainerPort{HostPort: 8080, ContainerPort: 80, Protocol: "TCP"}, false},
		{"53:53/udp", v1.ContainerPort{HostPort: 53, ContainerPort: 53, Protocol: "UDP"}, false},
		{"80", v1.ContainerPort{ContainerPort: 80, Protocol: "TCP"}, false},
		{"web:80", v1.ContainerPort{}, true},
		{"8080:", v1.ContainerPort{}, true},
		{"", v1.ContainerPort{}, true},
	}
	for _, tt := range tests {
		got, err := ParsePort(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("ParsePort(%q) = %+v, %v; want %+v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestReadEnvFile(t *testing.T) {
	t.Setenv("CUBE_TEST_FROM_HERE", "copied")
	path := filepath.Join(t.TempDir(), "env")
	src := "# comment\n\nA=1\nB=\"two words\"\nC='x'\nD=\"unmatched'\nCUBE_TEST_FROM_HERE\nCUBE_TEST_UNSET_VAR\nE=a=b\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []v1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "two words"}, {Name: "C", Value: "x"},
		{Name: "D", Value: "\"unmatched'"}, {Name: "CUBE_TEST_FROM_HERE", Value: "copied"}, {Name: "E", Value: "a=b"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadEnvFile = %+v; want %+v", got, want)
	}
	if _, err := ReadEnvFile(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "--env-file") {
		t.Errorf("missing file error = %v; want one naming --env-file", err)
	}
}

func TestGenerateName(t *testing.T) {
	for img, prefix := range map[string]string{
		"127.0.0.1:5000/lib/busybox:1.36":    "busybox-",
		"docker.io/library/Nginx@sha256:abc": "nginx-",
		"registry/___:v1":                    "instance-",
	} {
		got := generateName(img)
		if !regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `[0-9a-f]{4}$`).MatchString(got) {
			t.Errorf("generateName(%q) = %q; want %s and 4 hex digits", img, got, prefix)
		}
	}
}

func TestParseManifests(t *testing.T) {
	src := "kind: Instance\nmetadata: {name: a}\nspec: {containers: [{image: busybox}]}\n---\n\n---\nmetadata: {name: b}\nspec: {containers: [{image: busybox}]}\n"
	got, err := parseManifests("x.yaml", []byte(src))
	if err != nil || len(got) != 2 || got[0].Metadata.Name != "a" || got[1].Metadata.Name != "b" {
		t.Fatalf("parseManifests = %v, %v; want instances a and b", got, err)
	}
	for doc, want := range map[string]string{
		"metadata: {name: a}\nspec: {containerz: []}\n": `document 1: error unmarshaling JSON: while decoding JSON: json: unknown field "containerz"`,
		"---\nkind: Node\nmetadata: {name: a}\n":        `document 2: kind "Node" is not supported`,
		"metadata: [\n":                                 "document 1:",
	} {
		if _, err := parseManifests("x.yaml", []byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseManifests(%q) error = %v; want one containing %q", doc, err, want)
		}
	}
}

func TestJSONPath(t *testing.T) {
	in := &v1.Instance{Metadata: v1.ObjectMeta{Name: "web"}, Spec: v1.InstanceSpec{Containers: []v1.Container{{Image: "a"}, {Image: "b"}}}}
	for tmpl, want := range map[string]string{
		"{.metadata.name}":                "web",
		"{.spec.containers[*].image}":     "a b",
		"{.spec.containers[1].image}":     "b",
		"name={.metadata.name} ok":        "name=web ok",
		"{.spec.containers[0].resources}": "{}",
	} {
		got, err := jsonPath(tmpl, in)
		if err != nil || got != want {
			t.Errorf("jsonPath(%q) = %q, %v; want %q", tmpl, got, err, want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(d, 50); p != 50*time.Millisecond {
		t.Errorf("p50 = %s; want 50ms", p)
	}
	if p := percentile(d, 99); p != 99*time.Millisecond {
		t.Errorf("p99 = %s; want 99ms", p)
	}
	if p := percentile(nil, 50); p != 0 {
		t.Errorf("p50 of nothing = %s; want 0", p)
	}
}

func TestPhaseDurations(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	at := func(ms int) *time.Time { x := t0.Add(time.Duration(ms) * time.Millisecond); return &x }
	in := &v1.Instance{Metadata: v1.ObjectMeta{CreationTimestamp: t0},
		Status: v1.InstanceStatus{ScheduledAt: at(3), CreatingAt: at(5), RunningAt: at(105)}}
	d, ok := phaseDurations(in, *at(108))
	want := map[string]time.Duration{"schedule": 3 * time.Millisecond, "dispatch": 2 * time.Millisecond, "create": 100 * time.Millisecond, "report": 3 * time.Millisecond}
	if !ok || !reflect.DeepEqual(d, want) {
		t.Errorf("phaseDurations = %v, %v; want %v", d, ok, want)
	}
	in.Status.CreatingAt = nil
	if _, ok := phaseDurations(in, *at(108)); ok {
		t.Error("phaseDurations without creatingAt: ok; want not ok")
	}
}
