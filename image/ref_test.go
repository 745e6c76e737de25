package image

import (
	"strings"
	"testing"

	"github.com/cube-platform/cube/errdefs"
)

func TestNormalizeRef(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct{ in, want string }{
		{"busybox", "docker.io/library/busybox:latest"},
		{"busybox:1.36", "docker.io/library/busybox:1.36"},
		{"docker.io/busybox", "docker.io/library/busybox:latest"},
		{"docker.io/library/busybox:latest", "docker.io/library/busybox:latest"},
		{"index.docker.io/library/busybox", "docker.io/library/busybox:latest"},
		{"user/app:v1", "docker.io/user/app:v1"},
		{"127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1"},
		{"localhost:5000/a/b/c", "localhost:5000/a/b/c:latest"},
		{"quay.io/x/y@" + d, "quay.io/x/y@" + d},
		{"busybox:1.36@" + d, "docker.io/library/busybox@" + d},
	}
	for _, tt := range tests {
		got, err := NormalizeRef(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizeRef(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestNormalizeRefInvalid(t *testing.T) {
	for _, in := range []string{
		"", "a b", " busybox", "busybox\n", "UPPER/Case::x", "Busybox", "busybox:",
		":tag", "-bad", "app@sha256:abc", "app@md5:" + strings.Repeat("a", 32), "a/../b",
	} {
		_, err := NormalizeRef(in)
		wantErr(t, "NormalizeRef("+strings.ReplaceAll(in, "\n", `\n`)+")", err, ErrInvalidReference,
			"(expected NAME[:TAG] or NAME@sha256:DIGEST)")
		wantErr(t, "NormalizeRef", err, errdefs.ErrInvalid)
	}
	_, err := NormalizeRef("a b")
	if want := `invalid image reference "a b": `; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("NormalizeRef(%q) = %v; want a message starting %q", "a b", err, want)
	}
}
