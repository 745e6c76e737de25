package asuser

import (
	"errors"
	"os"
	"path/filepath"
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
