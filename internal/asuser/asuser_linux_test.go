package asuser

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDoDropsPrivilegeOnlyInFn(t *testing.T) {
	RequireRoot(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	var euid int
	err := Do(Nobody, func() error {
		euid = unix.Geteuid()
		_, err := os.ReadFile(secret)
		return err
	})
	if euid != Nobody {
		t.Errorf("euid inside Do = %d; want %d", euid, Nobody)
	}
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("reading a 0600 root file as nobody: err = %v; want permission denied", err)
	}
	if _, err := os.ReadFile(secret); err != nil {
		t.Errorf("after Do, the test itself lost root: %v", err)
	}
}

// TestDoLeavesTheProcessRoot: however often Do runs, and on whichever
// thread, the process as a whole (its main thread) stays root.
func TestDoLeavesTheProcessRoot(t *testing.T) {
	RequireRoot(t)
	for i := 0; i < 50; i++ {
		if err := Do(Nobody, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Uid:") && strings.Fields(line)[2] != "0" {
			t.Fatalf("process status %q after Do; want euid 0", line)
		}
	}
}
