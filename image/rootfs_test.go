package image

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cube-platform/cube/image/imagetest"
)

// importOne imports the archive at p and returns its single image's digest.
func importOne(t *testing.T, s Store, p string) string {
	t.Helper()
	imgs := importFile(t, s, p)
	if len(imgs) != 1 {
		t.Fatalf("Import(%s) = %+v; want one image", p, imgs)
	}
	return imgs[0].Digest
}

func rootFS(t *testing.T, s Store, digest string) string {
	t.Helper()
	root, err := s.RootFS(t.Context(), digest)
	if err != nil {
		t.Fatalf("RootFS(%s) = %v", digest, err)
	}
	return root
}

func TestRootFSBusybox(t *testing.T) {
	s := newStore(t)
	digest := importOne(t, s, imagetest.BuildBusybox(t, ""))
	root := rootFS(t, s, digest)
	if want := filepath.Join(s.rootfsDir, strings.TrimPrefix(digest, "sha256:")); root != want {
		t.Errorf("RootFS() = %s; want %s", root, want)
	}

	fi, err := os.Lstat(filepath.Join(root, "bin/busybox"))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o755 || fi.Size() != int64(len(imagetest.Busybox(t))) {
		t.Errorf("bin/busybox: %v, %v; want a 0755 file of %d bytes", fi, err, len(imagetest.Busybox(t)))
	} else if !fi.ModTime().Equal(imagetest.Epoch) {
		t.Errorf("bin/busybox mtime = %v; want %v", fi.ModTime(), imagetest.Epoch)
	}
	for name, want := range map[string]string{"bin/sh": "/bin/busybox", "bin/ls": "busybox", "bin/httpd": "busybox"} {
		if got, err := os.Readlink(filepath.Join(root, name)); err != nil || got != want {
			t.Errorf("readlink %s = %q, %v; want %q", name, got, err, want)
		}
	}
	for name, want := range map[string]os.FileMode{
		"tmp":  os.ModeDir | os.ModeSticky | 0o777,
		"root": os.ModeDir | 0o700,
		"proc": os.ModeDir | 0o555,
		".":    os.ModeDir | 0o755,
	} {
		if fi, err := os.Lstat(filepath.Join(root, name)); err != nil || fi.Mode() != want {
			t.Errorf("mode of %s = %v, %v; want %v", name, fi.Mode(), err, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/passwd")); err != nil || !strings.HasPrefix(string(b), "root:x:0:0:") {
		t.Errorf("etc/passwd = %q, %v", b, err)
	}

	// Once unpacked, the rootfs is served as is.
	if again := rootFS(t, s, digest); again != root || s.unpacks.Load() != 1 {
		t.Errorf("second RootFS() = %s after %d unpacks; want %s after 1", again, s.unpacks.Load(), root)
	}
}

// TestRootFSRuns runs the unpacked busybox in a chroot: the rootfs is a
// working Linux userland.
func TestRootFSRuns(t *testing.T) {
	requireRoot(t)
	s := newStore(t)
	root := rootFS(t, s, importOne(t, s, imagetest.BuildBusybox(t, "")))
	cmd := exec.Command("/bin/sh", "-c", "echo hello from $(id -u) in $(pwd); ls /bin/busybox")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = []string{imagetest.DefaultPath}
	out, err := cmd.CombinedOutput()
	if want := "hello from 0 in /\n/bin/busybox\n"; err != nil || string(out) != want {
		t.Errorf("sh in chroot %s = %q, %v; want %q", root, out, err, want)
	}
}

func TestRootFSConcurrent(t *testing.T) {
	s := newStore(t)
	digest := importOne(t, s, imagetest.BuildBusybox(t, ""))
	const n = 8
	paths := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { paths[i], errs[i] = s.RootFS(t.Context(), digest) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Errorf("RootFS() #%d = %s, %v; want %s", i, paths[i], errs[i], paths[0])
		}
	}
	if got := s.unpacks.Load(); got != 1 {
		t.Errorf("%d concurrent RootFS() calls unpacked %d times; want once", n, got)
	}
}

func TestRootFSCancelled(t *testing.T) {
	s := newStore(t)
	digest := importOne(t, s, imagetest.BuildBusybox(t, ""))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.RootFS(ctx, digest); !errors.Is(err, context.Canceled) {
		t.Errorf("RootFS(cancelled ctx) = %v; want context.Canceled", err)
	}
	// A later caller is not stuck with the abandoned unpack.
	root := rootFS(t, s, digest)
	if _, err := os.Stat(filepath.Join(root, "bin/busybox")); err != nil {
		t.Errorf("after a cancelled unpack, RootFS() = %s without bin/busybox: %v", root, err)
	}
}

// TestRootFSCrashRecovery plays a crash mid-unpack and mid-import: the
// debris is in tmp, never served, and gone when the store reopens.
func TestRootFSCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	digest := importOne(t, s, imagetest.BuildBusybox(t, ""))
	hex := strings.TrimPrefix(digest, "sha256:")
	for _, p := range []string{"rootfs-" + hex[:12] + "-123/bin/half", "import-456/blobs/sha256/x", "blob-789"} {
		p = filepath.Join(s.tmpDir, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s2 := openStore(t, dir)
	if ents, err := os.ReadDir(s2.tmpDir); err != nil || len(ents) != 0 {
		t.Errorf("tmp after reopen = %d entries, %v; want empty", len(ents), err)
	}
	if l, err := s2.List(t.Context()); err != nil || len(l) != 1 || l[0].Digest != digest {
		t.Errorf("List() after reopen = %+v, %v; want %s", l, err, digest)
	}
	root := rootFS(t, s2, digest)
	if _, err := os.Stat(filepath.Join(root, "bin/half")); err == nil {
		t.Errorf("RootFS() served the half-unpacked debris")
	}
	// And the finished rootfs survives a reopen without a new unpack.
	s3 := openStore(t, dir)
	if again := rootFS(t, s3, digest); again != root || s3.unpacks.Load() != 0 {
		t.Errorf("RootFS() after reopen = %s with %d unpacks; want %s with none", again, s3.unpacks.Load(), root)
	}
}

func TestGetAndRootFSErrors(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	tests := []struct {
		digest string
		class  error
	}{
		{"sha256:" + strings.Repeat("0", 64), ErrNotFound},
		{"nope", ErrInvalidReference},
		{"sha256:../../etc", ErrInvalidReference},
		{"sha256:" + strings.Repeat("A", 64), ErrInvalidReference},
		{"busybox", ErrInvalidReference},
	}
	for _, tt := range tests {
		_, err := s.Get(ctx, tt.digest)
		wantErr(t, "Get("+tt.digest+")", err, tt.class)
		_, err = s.RootFS(ctx, tt.digest)
		wantErr(t, "RootFS("+tt.digest+")", err, tt.class)
	}
}

func TestWhiteouts(t *testing.T) {
	s := newStore(t)
	I := imagetest.File
	digest := importOne(t, s, imagetest.BuildBusybox(t, "",
		imagetest.WithLayer(
			imagetest.Dir("data/", 0o755), I("data/a", 0o644, "a"), I("data/b", 0o644, "b"),
			imagetest.Dir("data/sub/", 0o755), I("data/sub/old", 0o644, "old"),
			imagetest.Dir("opq/", 0o755), I("opq/x", 0o644, "x"),
			I("etc/motd", 0o644, "hello"),
			imagetest.Dir("keep/", 0o755), I("keep/x", 0o644, "x"),
		),
		imagetest.WithLayer(
			// The opaque marker after this layer's files in data/...
			I("data/c", 0o644, "c"), I("data/sub/new", 0o644, "new"), imagetest.Opaque("data"),
			// ...and before them in opq/.
			imagetest.Opaque("opq"), I("opq/y", 0o644, "y"),
			imagetest.Whiteout("etc/motd"), imagetest.Whiteout("bin/wget"),
			imagetest.Whiteout("no/such/file"),
		),
	))
	root := rootFS(t, s, digest)
	for dir, want := range map[string][]string{
		"data":     {"c", "sub"},
		"data/sub": {"new"},
		"opq":      {"y"},
		"keep":     {"x"},
	} {
		ents, err := os.ReadDir(filepath.Join(root, dir))
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ls %s = %q, %v; want %q", dir, got, err, want)
		}
	}
	for _, gone := range []string{"etc/motd", "bin/wget", "no"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v; want it deleted", gone, err)
		}
	}
	for _, kept := range []string{"etc/passwd", "bin/sh", "bin/busybox"} {
		if _, err := os.Lstat(filepath.Join(root, kept)); err != nil {
			t.Errorf("%s: %v; want it kept", kept, err)
		}
	}
	for _, marker := range []string{"data/.wh..wh..opq", "opq/.wh..wh..opq", "etc/.wh.motd"} {
		if _, err := os.Lstat(filepath.Join(root, marker)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("whiteout marker %s was written to the rootfs", marker)
		}
	}
}
