package image

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadFileInRoot: reading a file out of an untrusted rootfs never
// leaves it, never blocks and never reads more than asked.
func TestReadFileInRoot(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "etc/big"), []byte(strings.Repeat("x", 4096)), 0o644))
	must(os.Symlink(secret, filepath.Join(root, "etc/abs")))                      // absolute, to the host
	must(os.Symlink("../../../../../../"+secret, filepath.Join(root, "etc/rel"))) // relative, climbing out
	must(os.Symlink("/etc/passwd", filepath.Join(root, "etc/inside")))            // absolute, inside
	must(syscall.Mkfifo(filepath.Join(root, "etc/fifo"), 0o644))
	must(os.Symlink(filepath.Join(root, "etc/fifo"), filepath.Join(root, "etc/tofifo")))

	for _, tt := range []struct {
		name string
		want string // content, or "" for an error
		err  error
	}{
		{"etc/passwd", "root:x:0:0::/root:/bin/sh\n", nil},
		{"/etc/passwd", "root:x:0:0::/root:/bin/sh\n", nil},
		{"etc/inside", "root:x:0:0::/root:/bin/sh\n", nil}, // resolved in the root
		{"etc/abs", "", fs.ErrNotExist},                    // /tmp/... inside the root: absent
		{"etc/rel", "", fs.ErrNotExist},
		{"../../../../" + secret, "", fs.ErrNotExist},
		{"etc/fifo", "", ErrNotRegular},
		{"etc/tofifo", "", fs.ErrNotExist}, // the root's own path, resolved inside: absent
		{"etc", "", ErrNotRegular},
		{"etc/big", "", ErrFileTooLarge},
	} {
		done := make(chan struct{})
		var b []byte
		var err error
		go func() { b, err = ReadFileInRoot(root, tt.name, 1024); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("ReadFileInRoot(%s) blocked", tt.name)
		}
		if tt.err == nil {
			if err != nil || string(b) != tt.want {
				t.Errorf("ReadFileInRoot(%s) = %q, %v; want %q", tt.name, b, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, tt.err) || strings.Contains(string(b), "host secret") {
			t.Errorf("ReadFileInRoot(%s) = %q, %v; want %v", tt.name, b, err, tt.err)
		}
	}
}
