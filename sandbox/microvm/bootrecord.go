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
	// From is FromCold, FromTemplate or FromWarm.
	From string `json:"from"`
	// Fallback says why a VM given a template booted cold (bounded).
	Fallback string `json:"fallback,omitempty"`
	// SetupMs is the agent's Setup (network, drives, identity); ReadyMs
	// the time from the VMM's start to Setup's end (for a clone: its
	// restore, up to agent ready with the instance's identity).
	SetupMs float64 `json:"setupMs"`
	ReadyMs float64 `json:"readyMs"`
	// ResumeMs is the last resume's, from the call to the guest running
	// with the host's clock (0: never suspended).
	ResumeMs float64 `json:"resumeMs,omitempty"`
	// ClockOffsetMs is the guest's clock minus the host's once set up
	// (or resumed), measured over a round trip to the agent.
	ClockOffsetMs float64 `json:"clockOffsetMs"`
	// GuestMiB is the guest's memory.
	GuestMiB int    `json:"guestMiB"`
	Accel    string `json:"accel"`
	// Kernel and BootID are the guest's, as its agent said (untrusted).
	Kernel string `json:"kernel"`
	BootID string `json:"bootID"`
}

// Where a VM came from (BootRecord.From).
const (
	// FromCold booted the kernel.
	FromCold = "cold"
	// FromTemplate is a clone of the template, restored for the sandbox.
	FromTemplate = "template"
	// FromWarm is a warm VM the sandbox adopted: a clone of the template
	// restored and rehearsed ahead (see Warm).
	FromWarm = "warm"
)

// BootRecordFile is where a sandbox of state dir dir keeps its record.
func BootRecordFile(dir string) string { return filepath.Join(dir, "boot.json") }

func writeBootRecord(dir string, r BootRecord) error {
	if len(r.Fallback) > 512 {
		r.Fallback = r.Fallback[:509] + "..."
	}
	return writeJSON(BootRecordFile(dir), r)
}

// ReadBootRecord reads the record of the sandbox of state dir dir.
func ReadBootRecord(dir string) (BootRecord, error) {
	var r BootRecord
	err := readJSON(BootRecordFile(dir), 4096, &r)
	return r, err
}

// maxRecordBytes bounds the other records this package reads back (a
// template's meta, a suspend record).
const maxRecordBytes = 64 << 10

// writeJSON writes v to path as a whole or not at all (a temporary file,
// then a rename), for root alone.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readJSON reads at most limit bytes of path into v.
func readJSON(path string, limit int64, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
