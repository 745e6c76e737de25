package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if goroutines of this package (or imagetest) are
// still alive once the tests are done: unpack flights and downloads must
// end with their callers.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := checkLeaks(10 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func checkLeaks(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "image.TestMain") || strings.Contains(g, "image.checkLeaks") {
				continue
			}
			if strings.Contains(g, "cube/image.") || strings.Contains(g, "cube/image/imagetest.") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaked goroutines:\n%s", strings.Join(leaked, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newStore opens a store in a fresh temp dir; edit tweaks its options.
func newStore(t *testing.T, edit ...func(*Options)) *localStore {
	t.Helper()
	return openStore(t, t.TempDir(), edit...)
}

func openStore(t *testing.T, root string, edit ...func(*Options)) *localStore {
	t.Helper()
	opts := DefaultOptions()
	for _, e := range edit {
		e(&opts)
	}
	s, err := NewLocalStoreWithOptions(root, nil, opts)
	if err != nil {
		t.Fatalf("NewLocalStoreWithOptions(%s) = %v", root, err)
	}
	return s.(*localStore)
}

// importFile imports the archive at path and fails the test on error.
func importFile(t *testing.T, s Store, path string) []Image {
	t.Helper()
	imgs, err := importPath(t, s, path)
	if err != nil {
		t.Fatalf("Import(%s) = %v", path, err)
	}
	return imgs
}

func importPath(t *testing.T, s Store, path string) ([]Image, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return s.Import(context.Background(), testOwner, f)
}

// wantErr checks that err wraps class and mentions every fragment.
func wantErr(t *testing.T, what string, err, class error, fragments ...string) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Fatalf("%s = %v; want an error wrapping %q", what, err, class)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("%s = %q; want it to mention %q", what, err, f)
		}
	}
}

// requireRoot skips tests that need root (ownership, chroot).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (run the tests as root to check ownership and run busybox in a chroot)")
	}
}

// testOwner is the tenant the package's tests import and pull for.
var testOwner = Owner{Tenant: "t1"}
