package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image/imagetest"
)

func requireMkfsErofs(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("mkfs.erofs not found but CI=true: apt-get install erofs-utils")
		}
		t.Skip("mkfs.erofs not found (apt-get install erofs-utils)")
	}
}

// makeTree fills dir with what a container rootfs holds: dirs, files of
// several modes and owners, setuid, sticky, a hardlink, symlinks (one
// dangling, one absolute), a user xattr, an empty file, a file larger
// than a block. reverse creates the entries in the opposite order (the
// bytes must not depend on it).
func makeTree(t *testing.T, dir string, reverse bool) {
	t.Helper()
	type op func() error
	p := func(n string) string { return filepath.Join(dir, n) }
	big := bytes.Repeat([]byte("cube block image "), 1000)
	ops := []op{
		func() error { return os.MkdirAll(p("etc/ssl"), 0o755) },
		func() error { return os.MkdirAll(p("usr/bin"), 0o755) },
		func() error { return os.MkdirAll(p("tmp"), 0o755) },
		func() error { return os.MkdirAll(p("root"), 0o700) },
		func() error {
			return os.WriteFile(p("etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"), 0o644)
		},
		func() error { return os.WriteFile(p("etc/shadow"), []byte("root:*:1::::::\n"), 0o640) },
		func() error { return os.WriteFile(p("usr/bin/app"), big, 0o755) },
		func() error { return os.WriteFile(p("usr/bin/su"), []byte("#!/bin/sh\n"), 0o755) },
		func() error { return os.WriteFile(p("etc/empty"), nil, 0o600) },
		func() error { return os.Symlink("/usr/bin/app", p("usr/bin/abs")) },
		func() error { return os.Symlink("../nowhere", p("etc/dangling")) },
		func() error { return os.Symlink("usr/bin", p("bin")) },
	}
	// Attributes, after every entry exists.
	attrs := []op{
		func() error { return os.Link(p("usr/bin/app"), p("usr/bin/app2")) },
		func() error { return os.Chmod(p("tmp"), os.ModeSticky|0o777) },
		func() error { return os.Chmod(p("usr/bin/su"), os.ModeSetuid|0o755) },
		func() error { return os.Lchown(p("etc/shadow"), 0, 42) },
		func() error { return os.Lchown(p("usr/bin/app"), 1000, 1000) },
		func() error { return os.Lchown(p("etc/dangling"), 7, 8) },
		func() error { return unix.Lsetxattr(p("etc/passwd"), "user.cube", []byte("kept"), 0) },
	}
	if reverse {
		for i, j := 0, len(ops)-1; i < j; i, j = i+1, j-1 {
			ops[i], ops[j] = ops[j], ops[i]
		}
		// Parents first all the same.
		ops = append([]op{
			func() error { return os.MkdirAll(p("etc/ssl"), 0o755) },
			func() error { return os.MkdirAll(p("usr/bin"), 0o755) },
		}, ops...)
	}
	for _, o := range append(ops, attrs...) {
		if err := o(); err != nil {
			t.Fatal(err)
		}
	}
	// Fixed mtimes, deepest first so a dir's is not bumped afterwards.
	var paths []string
	filepath.Walk(dir, func(path string, _ fs.FileInfo, err error) error {
		paths = append(paths, path)
		return err
	})
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	for i, path := range paths {
		ts := unix.NsecToTimespec(time.Unix(1_600_000_000+int64(i), 0).UnixNano())
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBuildBlockImageDeterministic(t *testing.T) {
	requireRoot(t)
	requireMkfsErofs(t)
	src := t.TempDir()
	makeTree(t, src, false)
	out := t.TempDir()
	a, b := filepath.Join(out, "a.erofs"), filepath.Join(out, "b.erofs")
	for _, p := range []string{a, b} {
		if err := BuildBlockImage(t.Context(), src, p); err != nil {
			t.Fatal(err)
		}
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if len(ab) == 0 || !bytes.Equal(ab, bb) {
		t.Fatalf("two builds of one tree differ (%d and %d bytes)", len(ab), len(bb))
	}
	// Another tree with the same content, made in another order (so
	// another readdir order and other host inode numbers), on tmpfs.
	tm := t.TempDir()
	if err := syscall.Mount("tmpfs", tm, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(tm, syscall.MNT_DETACH) })
	if err := os.Chmod(src, 0o755); err != nil {
		t.Fatal(err)
	}
	makeTree(t, tm, true)
	c := filepath.Join(out, "c.erofs")
	if err := BuildBlockImage(t.Context(), tm, c); err != nil {
		t.Fatal(err)
	}
	cb, _ := os.ReadFile(c)
	if !bytes.Equal(ab, cb) {
		t.Errorf("the same tree made in another order gives other bytes (%d and %d)", len(ab), len(cb))
	}
	if ents, _ := os.ReadDir(out); len(ents) != 3 {
		t.Errorf("%d files in the output dir; want the 3 images and no temp files", len(ents))
	}
}

// mountErofs loop-mounts img read-only and unmounts it at cleanup.
func mountErofs(t *testing.T, img string) string {
	t.Helper()
	mnt := t.TempDir()
	out, err := exec.Command("mount", "-o", "ro,loop", "-t", "erofs", img, mnt).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount -t erofs %s: %v: %s", img, err, out)
		}
		t.Skipf("cannot loop-mount erofs here (%v: %s): needs loop devices and erofs in the kernel", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// describeTree lists every entry of dir with its type, mode, owner,
// size, mtime, link target, user xattrs and a content digest prefix.
func describeTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(path string, fi fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		st := fi.Sys().(*syscall.Stat_t)
		d := fmt.Sprintf("%v uid=%d gid=%d nlink=%d mtime=%d", fi.Mode(), st.Uid, st.Gid, st.Nlink, fi.ModTime().Unix())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(path)
			d += " -> " + l
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			d += fmt.Sprintf(" size=%d data=%x", len(b), b[:min(len(b), 16)])
			if v := make([]byte, 64); true {
				if n, err := unix.Lgetxattr(path, "user.cube", v); err == nil {
					d += " user.cube=" + string(v[:n])
				}
			}
		}
		out[rel] = d
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func compareTrees(t *testing.T, want, got map[string]string) {
	t.Helper()
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s: missing from the image", name)
		} else if g != w && name != "." {
			t.Errorf("%s: image has %q; rootfs has %q", name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: in the image, not in the rootfs", name)
		}
	}
}

// TestBlockImageMountMatchesTree mounts the image as the guest would and
// compares every entry with the source tree.
func TestBlockImageMountMatchesTree(t *testing.T) {
	requireRoot(t)
	requireMkfsErofs(t)
	src := t.TempDir()
	if err := os.Chmod(src, 0o755); err != nil {
		t.Fatal(err)
	}
	makeTree(t, src, false)
	img := filepath.Join(t.TempDir(), "r.erofs")
	if err := BuildBlockImage(t.Context(), src, img); err != nil {
		t.Fatal(err)
	}
	mnt := mountErofs(t, img)
	want, got := describeTree(t, src), describeTree(t, mnt)
	if !strings.Contains(want["etc/passwd"], "user.cube=kept") {
		t.Fatalf("the test tree lacks its xattr: %s", want["etc/passwd"])
	}
	compareTrees(t, want, got)
	if err := os.WriteFile(filepath.Join(mnt, "etc/new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write into the mounted image = %v; want EROFS", err)
	}
}

func TestStoreBlockImage(t *testing.T) {
	requireRoot(t)
	requireMkfsErofs(t)
	s := newStore(t)
	digest := importOne(t, s, imagetest.BuildBusybox(t, ""))
	const n = 6
	paths, types, errs := make([]string, n), make([]string, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { paths[i], types[i], errs[i] = s.BlockImage(t.Context(), digest) })
	}
	wg.Wait()
	want := filepath.Join(s.root, "block", strings.TrimPrefix(digest, "sha256:")+".erofs")
	for i := range n {
		if errs[i] != nil || paths[i] != want || types[i] != FSTypeEROFS {
			t.Errorf("BlockImage #%d = %s, %s, %v; want %s, erofs", i, paths[i], types[i], errs[i], want)
		}
	}
	if got := s.blockBuilds.Load(); got != 1 {
		t.Errorf("%d concurrent BlockImage calls built %d times; want once", n, got)
	}
	if p, _, err := s.BlockImage(t.Context(), digest); err != nil || p != want || s.blockBuilds.Load() != 1 {
		t.Errorf("BlockImage again = %s, %v after %d builds; want %s, no new build", p, err, s.blockBuilds.Load(), want)
	}
	if ents, _ := os.ReadDir(s.tmpDir); len(ents) != 0 {
		t.Errorf("store tmp holds %d entries after the builds; want none", len(ents))
	}
	// The image holds the rootfs as it was unpacked.
	root := rootFS(t, s, digest)
	compareTrees(t, describeTree(t, root), describeTree(t, mountErofs(t, want)))

	// A reopened store finds it and does not build again.
	s2 := openStore(t, s.root)
	if p, _, err := s2.BlockImage(t.Context(), digest); err != nil || p != want || s2.blockBuilds.Load() != 0 {
		t.Errorf("reopened BlockImage = %s, %v after %d builds; want %s without building", p, err, s2.blockBuilds.Load(), want)
	}
}

func TestStoreBlockImageErrors(t *testing.T) {
	s := newStore(t)
	_, _, err := s.BlockImage(t.Context(), "sha256:"+strings.Repeat("ab", 32))
	wantErr(t, "BlockImage(unknown)", err, ErrNotFound)
	_, _, err = s.BlockImage(t.Context(), "nonsense")
	if err == nil {
		t.Error("BlockImage(nonsense) = nil; want an error")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	digest := importOne(t, s, imagetest.BuildBusybox(t, ""))
	if _, _, err := s.BlockImage(ctx, digest); !errors.Is(err, context.Canceled) {
		t.Errorf("BlockImage(cancelled) = %v; want context.Canceled", err)
	}
}

// fakeMkfs puts a stand-in mkfs.erofs first in PATH (a failing or hanging
// mkfs cannot be had otherwise); body is its shell script.
func fakeMkfs(t *testing.T, body string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mkfs.erofs"), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
}

func TestBuildBlockImageFailures(t *testing.T) {
	src, out := t.TempDir(), t.TempDir()
	if err := BuildBlockImage(t.Context(), filepath.Join(src, "missing"), filepath.Join(out, "x")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("BuildBlockImage(missing dir) = %v; want ErrInvalid", err)
	}
	t.Run("stderr", func(t *testing.T) {
		fakeMkfs(t, `echo "mkfs.erofs: out of inodes on $1" >&2; exit 1`)
		err := BuildBlockImage(t.Context(), src, filepath.Join(out, "x"))
		if err == nil || !strings.Contains(err.Error(), "out of inodes") {
			t.Errorf("BuildBlockImage with a failing mkfs = %v; want its stderr in the error", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		fakeMkfs(t, `exec sleep 600`)
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		err := BuildBlockImage(ctx, src, filepath.Join(out, "x"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("BuildBlockImage with a hanging mkfs = %v; want DeadlineExceeded", err)
		}
	})
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("failed builds left %v", names)
	}
}
