package logfile

import (
	"errors"
	"fmt"
	"os"
)

// endPath marks the log at path as ended for good: whoever wrote it will
// write no more (the container exited and will not run again). A follower
// that reaches the end of the data and sees the mark has read everything,
// and stops. The name is not a rotation (path.N), so rotation ignores it.
func endPath(path string) string { return path + ".end" }

// End marks the log as complete: call it after the last record of the
// last run was written (every stream closed). A follower then stops once
// it has read everything.
func (w *Writer) End() error {
	f, err := os.OpenFile(endPath(w.path), os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("end log %s: %w", w.path, err)
	}
	return f.Close()
}

// Resume removes the mark End left, before records are written again
// (the container runs once more, e.g. under a shim that replaced a lost
// one).
func (w *Writer) Resume() error {
	if err := os.Remove(endPath(w.path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("resume log %s: %w", w.path, err)
	}
	return nil
}

// ended reports whether the log at path was marked complete.
func ended(path string) bool {
	_, err := os.Stat(endPath(path))
	return err == nil
}
