//go:build !linux

package image

import (
	"fmt"
	"io"
	"os"
)

// ReadFileInRoot reads name inside root through os.Root (see the Linux
// version for the contract; here a symlink that leaves root fails instead
// of being resolved inside it).
func ReadFileInRoot(root, name string, max int64) ([]byte, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	fi, err := r.Lstat(name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", name, ErrNotRegular)
	}
	f, err := r.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w", name, ErrFileTooLarge)
	}
	return b, nil
}
