package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cube-platform/cube/errdefs"
)

// TestResolveUserReadsOnlyTheImage resolves a named USER against images
// whose /etc/passwd is the real thing, a link to a host file that has the
// user (absolute and climbing out), and a FIFO: only the first resolves;
// the others fail at once naming the image file, never with the host's ids.
func TestResolveUserReadsOnlyTheImage(t *testing.T) {
	host := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(host, []byte("web:x:4242:4242::/:/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		plant func(p string) error
		want  string // "" means an error
	}{
		{"image passwd", func(p string) error { return os.WriteFile(p, []byte("web:x:1000:1001::/:/bin/sh\n"), 0o644) }, "1000:1001"},
		{"absolute link to the host", func(p string) error { return os.Symlink(host, p) }, ""},
		{"relative link out", func(p string) error { return os.Symlink("../../../../../../../.."+host, p) }, ""},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o644) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rootfs := t.TempDir()
			if err := os.Mkdir(filepath.Join(rootfs, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := tt.plant(filepath.Join(rootfs, "etc", "passwd")); err != nil {
				t.Fatal(err)
			}
			type result struct {
				user string
				err  error
			}
			done := make(chan result, 1)
			go func() {
				u, err := resolveUser(rootfs, "web")
				done <- result{u, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("resolveUser blocked on the image's /etc/passwd")
			}
			if tt.want != "" {
				if r.err != nil || r.user != tt.want {
					t.Errorf("resolveUser = %q, %v; want %q", r.user, r.err, tt.want)
				}
				return
			}
			if r.err == nil || !errors.Is(r.err, errdefs.ErrInvalid) || !strings.Contains(r.err.Error(), "/etc/passwd") || strings.Contains(r.user, "4242") {
				t.Errorf("resolveUser = %q, %v; want errdefs.ErrInvalid naming /etc/passwd", r.user, r.err)
			}
		})
	}
}
