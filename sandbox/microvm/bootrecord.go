package microvm

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// BootRecord is what the last boot of a sandbox's VM was like, kept as
// <StateDir>/boot.json for the node's operator and `cube bench boot`.
type BootRecord struct {
	// VMMPid is the VMM's host pid.
	VMMPid int `json:"vmmPid"`
	// BootMs is the time from the VMM's start to the agent's first answer.
	BootMs float64 `json:"bootMs"`
	// GuestMiB is the guest's memory.
	GuestMiB int    `json:"guestMiB"`
	Accel    string `json:"accel"`
	// Kernel and BootID are the guest's, as its agent said (untrusted).
	Kernel string `json:"kernel"`
	BootID string `json:"bootID"`
}

// BootRecordFile is where a sandbox of state dir dir keeps its record.
func BootRecordFile(dir string) string { return filepath.Join(dir, "boot.json") }

func writeBootRecord(dir string, r BootRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := BootRecordFile(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, BootRecordFile(dir))
}

// ReadBootRecord reads the record of the sandbox of state dir dir.
func ReadBootRecord(dir string) (BootRecord, error) {
	var r BootRecord
	f, err := os.Open(BootRecordFile(dir))
	if err != nil {
		return r, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("boot record %s: %w", BootRecordFile(dir), err)
	}
	return r, nil
}
