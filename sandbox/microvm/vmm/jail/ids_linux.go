package jail

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// The VMM uids (and gids, the same number) are allocated from
// [FirstID, FirstID+IDCount): far above any regular or system account, and
// one per running VM, so two VMMs never share a uid (one compromised VMM
// could otherwise signal or ptrace another).
const (
	FirstID = 200000
	IDCount = 65536
)

// AllocateID returns the uid/gid for the VM vmID, recording it as the
// file dir/<id> (content: vmID). It is idempotent: a VM that already has
// one (a restarted shim) gets the same one back. dir is node-wide, e.g.
// /var/lib/cube/vmm-ids; an flock on dir/.lock makes concurrent callers
// safe across processes.
func AllocateID(dir, vmID string) (int, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return 0, err
	}
	defer unlock()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	used := make(map[int]bool, len(ents))
	for _, e := range ents {
		id, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		used[id] = true
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && bytes.Equal(b, []byte(vmID)) {
			return id, nil
		}
	}
	for id := FirstID; id < FirstID+IDCount; id++ {
		if used[id] {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(id)), []byte(vmID), 0o600); err != nil {
			return 0, err
		}
		return id, nil
	}
	return 0, fmt.Errorf("all %d vmm uids from %d are in use: remove stale entries in %s", IDCount, FirstID, dir)
}

// ReleaseID frees vmID's uid; releasing one that is not held is fine.
func ReleaseID(dir, vmID string) error {
	unlock, err := lockDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	defer unlock()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if b, err := os.ReadFile(p); err == nil && bytes.Equal(b, []byte(vmID)) {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
	}
	return nil
}

// RenameID gives the uid of VM from to VM to, dropping the one to had:
// a pooled VM, jailed as its own uid, becomes an instance's, and the
// instance's later owners find the uid by the instance's name.
func RenameID(dir, from, to string) (int, error) {
	unlock, err := lockDir(dir)
	if err != nil {
		return 0, err
	}
	defer unlock()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	id := 0
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		switch {
		case err != nil:
		case bytes.Equal(b, []byte(to)):
			if err := os.Remove(p); err != nil {
				return 0, err
			}
		case bytes.Equal(b, []byte(from)):
			id = n
		}
	}
	if id == 0 {
		return 0, fmt.Errorf("vmm ids: %q has no uid: %w", from, os.ErrNotExist)
	}
	// Written whole by rename: a reader never sees a half-written name.
	tmp := filepath.Join(dir, ".rename")
	if err := os.WriteFile(tmp, []byte(to), 0o600); err != nil {
		return 0, err
	}
	return id, os.Rename(tmp, filepath.Join(dir, strconv.Itoa(id)))
}

func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
