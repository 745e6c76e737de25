package jail

import (
	"errors"
	"os"
	"testing"
)

// TestRenameID: a pooled VM's uid passes to the instance that adopts it;
// the uid the instance had is freed, and no other VM's changes.
func TestRenameID(t *testing.T) {
	dir := t.TempDir()
	ids := map[string]int{}
	for _, vm := range []string{"pool-1", "inst", "other"} {
		id, err := AllocateID(dir, vm)
		if err != nil {
			t.Fatal(err)
		}
		ids[vm] = id
	}
	got, err := RenameID(dir, "pool-1", "inst")
	if err != nil || got != ids["pool-1"] {
		t.Fatalf("RenameID = %d, %v; want the pool's uid %d", got, err, ids["pool-1"])
	}
	if id, _ := AllocateID(dir, "inst"); id != ids["pool-1"] {
		t.Errorf("inst's uid = %d after the rename; want %d", id, ids["pool-1"])
	}
	if id, _ := AllocateID(dir, "other"); id != ids["other"] {
		t.Errorf("other's uid changed: %d, want %d", id, ids["other"])
	}
	// The pool's name is gone; the instance's old uid is free again.
	if id, _ := AllocateID(dir, "next"); id != ids["inst"] {
		t.Errorf("the next VM got uid %d; want the freed %d", id, ids["inst"])
	}
	if _, err := RenameID(dir, "pool-1", "x"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("RenameID of a name with no uid = %v; want ErrNotExist", err)
	}
}
