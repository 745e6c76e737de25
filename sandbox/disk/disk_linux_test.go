package disk

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestMake: a writable layer is a sparse, clean ext4 of the size asked,
// made by mkfs or copied from the cache, and never half-made on failure.
func TestMake(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("mkfs.ext4 missing but CI=true: apt-get install e2fsprogs")
		}
		t.Skip("mkfs.ext4 missing: apt-get install e2fsprogs")
	}
	ctx := context.Background()
	dir, cache := t.TempDir(), t.TempDir()
	const size = 64 << 20
	fresh, cached := filepath.Join(dir, "fresh.img"), filepath.Join(dir, "cached.img")
	if err := Make(ctx, fresh, size, ""); err != nil {
		t.Fatal(err)
	}
	if err := Make(ctx, cached, size, cache); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{fresh, cached} {
		var st syscall.Stat_t
		if err := syscall.Stat(f, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != size || st.Blocks*512 >= size/4 {
			t.Errorf("%s: size %d, %d bytes allocated; want %d, sparse", f, st.Size, st.Blocks*512, size)
		}
		if out, err := exec.Command("e2fsck", "-n", "-f", f).CombinedOutput(); err != nil {
			t.Errorf("e2fsck %s: %v\n%s", f, err, out)
		}
	}
	tpls, _ := filepath.Glob(filepath.Join(cache, "ext4-*.img"))
	if len(tpls) != 1 {
		t.Fatalf("cache holds %v; want one empty filesystem", tpls)
	}
	a, _ := os.ReadFile(tpls[0])
	b, _ := os.ReadFile(cached)
	if !bytes.Equal(a, b) {
		t.Error("the layer made from the cache differs from the cached filesystem")
	}
	// A failing mkfs (a size it refuses) leaves no file, not even a temp one.
	bad := filepath.Join(dir, "bad.img")
	if err := Make(ctx, bad, 4096, ""); err == nil {
		t.Error("Make of a 4 KiB ext4 succeeded; want mkfs to refuse it")
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 2 {
		t.Errorf("files after a failed Make: %v; want only the two good layers", left)
	}
}
