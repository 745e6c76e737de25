package sandbox

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
)

// TestReadImageFileRefusesHostileImages plants, at an image's /etc/passwd,
// everything a crafted image could put there and reads it the way the
// runc backend and the node do. A host file with a secret is the target
// of the links: its bytes must never come back, and no read may block.
func TestReadImageFileRefusesHostileImages(t *testing.T) {
	host := t.TempDir()
	secret := filepath.Join(host, "shadow")
	if err := os.WriteFile(secret, []byte("root:HOST-SECRET:"), 0o600); err != nil {
		t.Fatal(err)
	}
	const good = "root:x:0:0::/:/bin/sh\n"
	cases := []struct {
		name    string
		plant   func(t *testing.T, etc string) // makes etc/passwd
		want    string                         // content, when it must be read
		wantErr error
	}{
		{"regular file", func(t *testing.T, etc string) { write(t, filepath.Join(etc, "passwd"), good) }, good, nil},
		{"link inside the image", func(t *testing.T, etc string) {
			write(t, filepath.Join(etc, "passwd.real"), good)
			symlink(t, "passwd.real", filepath.Join(etc, "passwd"))
		}, good, nil},
		{"absolute link to a host file", func(t *testing.T, etc string) { symlink(t, secret, filepath.Join(etc, "passwd")) }, "", errdefs.ErrInvalid},
		{"relative link out of the image", func(t *testing.T, etc string) {
			symlink(t, "../../../../../../../../../../.."+secret, filepath.Join(etc, "passwd"))
		}, "", errdefs.ErrInvalid},
		{"link through a linked directory", func(t *testing.T, etc string) {
			symlink(t, host, filepath.Join(etc, "hostdir"))
			symlink(t, "hostdir/shadow", filepath.Join(etc, "passwd"))
		}, "", errdefs.ErrInvalid},
		{"FIFO", func(t *testing.T, etc string) {
			if err := unix.Mkfifo(filepath.Join(etc, "passwd"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "", errdefs.ErrInvalid},
		{"directory", func(t *testing.T, etc string) {
			if err := os.Mkdir(filepath.Join(etc, "passwd"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, "", errdefs.ErrInvalid},
		{"larger than the cap", func(t *testing.T, etc string) {
			write(t, filepath.Join(etc, "passwd"), strings.Repeat("x", MaxImageFileSize+1))
		}, "", errdefs.ErrInvalid},
		{"link loop", func(t *testing.T, etc string) {
			symlink(t, "passwd", filepath.Join(etc, "passwd"))
		}, "", errdefs.ErrInvalid},
		{"missing", func(t *testing.T, etc string) {}, "", fs.ErrNotExist},
	}
	if os.Geteuid() == 0 {
		cases = append(cases, struct {
			name    string
			plant   func(t *testing.T, etc string)
			want    string
			wantErr error
		}{"character device", func(t *testing.T, etc string) {
			// /dev/zero: a read would never end without the type check.
			if err := unix.Mknod(filepath.Join(etc, "passwd"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5))); err != nil {
				t.Fatal(err)
			}
		}, "", errdefs.ErrInvalid})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rootfs := t.TempDir()
			etc := filepath.Join(rootfs, "etc")
			if err := os.Mkdir(etc, 0o755); err != nil {
				t.Fatal(err)
			}
			tc.plant(t, etc)
			type result struct {
				b   []byte
				err error
			}
			done := make(chan result, 1)
			go func() {
				b, err := ReadImageFile(rootfs, "/etc/passwd")
				done <- result{b, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				// Unblock the FIFO so the goroutine ends, then fail.
				if f, err := os.OpenFile(filepath.Join(etc, "passwd"), os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
				t.Fatal("ReadImageFile blocked")
			}
			if strings.Contains(string(r.b), "HOST-SECRET") || (r.err != nil && strings.Contains(r.err.Error(), "HOST-SECRET")) {
				t.Fatalf("ReadImageFile returned the host file: %q, %v", r.b, r.err)
			}
			if tc.wantErr != nil {
				if !errors.Is(r.err, tc.wantErr) || !strings.Contains(r.err.Error(), "/etc/passwd") {
					t.Errorf("ReadImageFile = %q, %v; want an error naming /etc/passwd that is %v", r.b, r.err, tc.wantErr)
				}
				return
			}
			if r.err != nil || string(r.b) != tc.want {
				t.Errorf("ReadImageFile = %q, %v; want %q", r.b, r.err, tc.want)
			}
		})
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}
