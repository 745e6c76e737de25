package cli

import (
	"os"
	"path/filepath"
)

// shimBinary is the small per-instance supervisor `make install` puts
// beside cube (cmd/cube-shim).
const shimBinary = "cube-shim"

// defaultShimCommand runs the cube-shim beside this executable when there
// is one: it starts in a few milliseconds, where `cube shim` first runs
// the initialisation of every package in cube. Without one (a bare `go
// build` of cube, the e2e harness) it returns nil, and `cube shim` is used.
func defaultShimCommand() []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	p := filepath.Join(filepath.Dir(exe), shimBinary)
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return nil
	}
	return []string{p, "--config"}
}
