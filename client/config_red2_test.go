package client

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cube-platform/cube/internal/asuser"
)

// TestSaveInSharedDirKeepsTokenFromOthers: `cube up --config
// /tmp/cube.yaml` (any directory other users may write) must not hand the
// admin token to a local user who prepared the staging file. Save wrote
// PATH.tmp, following whatever was there: nobody pre-created it (owned by
// nobody, so a chmod to 0600 still let nobody read it) and after the
// rename nobody owned the config and read the token; or nobody made it a
// symlink, and root overwrote the file it named.
func TestSaveInSharedDirKeepsTokenFromOthers(t *testing.T) {
	asuser.RequireRoot(t)
	for _, plant := range []struct {
		name string
		do   func(staging, victim string) error
	}{
		{"file", func(staging, _ string) error { return os.WriteFile(staging, nil, 0o666) }},
		{"symlink", func(staging, victim string) error { return os.Symlink(victim, staging) }},
	} {
		t.Run(plant.name, func(t *testing.T) {
			base := t.TempDir()
			shared := filepath.Join(base, "tmp")
			if err := os.Mkdir(shared, 0o755); err != nil {
				t.Fatal(err)
			}
			// t.TempDir makes its dirs 0700; nobody must reach shared.
			for _, d := range []string{filepath.Dir(base), base} {
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(shared, 0o1777); err != nil { // like /tmp
				t.Fatal(err)
			}
			path := filepath.Join(shared, "cube.yaml")
			victim := filepath.Join(base, "victim")
			if err := os.WriteFile(victim, []byte("keep\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := asuser.Do(asuser.Nobody, func() error { return plant.do(path+".tmp", victim) }); err != nil {
				t.Fatal(err)
			}
			const secret = "cube_redteamsecretadmintoken"
			c := &Config{}
			c.Upsert(Context{Name: "local", Server: "http://127.0.0.1:1", Token: secret})
			if err := c.Save(path); err != nil {
				t.Fatalf("Save = %v; want the config written", err)
			}
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if st.Uid != 0 || fi.Mode() != 0o600 {
				t.Errorf("config is uid %d mode %v; want uid 0 (the writer) and 0600", st.Uid, fi.Mode())
			}
			// Positive control: root reads the token back.
			if b, err := os.ReadFile(path); err != nil || !strings.Contains(string(b), secret) {
				t.Fatalf("root reads %q, %v; want the token", b, err)
			}
			err = asuser.Do(asuser.Nobody, func() error {
				b, err := os.ReadFile(path)
				if err == nil {
					return errors.New("nobody read the config: " + string(b))
				}
				if !errors.Is(err, fs.ErrPermission) {
					return err
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
			if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
				t.Errorf("the file a planted symlink names now holds %q; want it untouched", b)
			}
		})
	}
}
