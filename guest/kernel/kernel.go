// Package kernel finds and builds Cube's guest kernel: an uncompressed
// vmlinux (PVH entry) built from Debian's linux-source-6.1 with the
// checked-in config.fragment, cached by hash at
// <cache>/kernel/<hash>/vmlinux.
//
// The fragment and build.sh are embedded, so a binary always asks for the
// kernel it was built with. The package depends only on the standard
// library, x/sys and errdefs; it must not import the rest of Cube (the
// node, the shim and tests all use it).
package kernel

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cube-platform/cube/errdefs"
)

// DefaultCacheDir is the cache root Cube uses unless told otherwise.
const DefaultCacheDir = "/var/cache/cube"

// SourcePackage is the Debian package the kernel is built from.
const SourcePackage = "linux-source-6.1"

//go:embed config.fragment
var fragment []byte

//go:embed build.sh
var buildScript []byte

var (
	srcOnce sync.Once
	srcVer  string
)

// sourceVersion is the installed version of SourcePackage, "" when it is
// not installed (the build then fails with a clear message; Find still
// works for a cache filled on another machine with the same version).
func sourceVersion() string {
	srcOnce.Do(func() {
		out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", SourcePackage).Output()
		if err == nil {
			srcVer = strings.TrimSpace(string(out))
		}
	})
	return srcVer
}

// hashOf is the cache key: sha256 over the fragment, the script and the
// source version, as build.sh computes it, first 16 hex digits.
func hashOf(fragment, script []byte, version string) string {
	h := sha256.New()
	h.Write(fragment)
	h.Write(script)
	fmt.Fprintf(h, "%s %s\n", SourcePackage, version)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Hash is the cache key of the kernel this binary wants.
func Hash() string { return hashOf(fragment, buildScript, sourceVersion()) }

// Fragment returns the embedded config fragment.
func Fragment() []byte { return bytes.Clone(fragment) }

// Dir is where this binary's kernel lives under cacheDir.
func Dir(cacheDir string) string { return filepath.Join(cacheDir, "kernel", Hash()) }

// Path is where this binary's vmlinux lives under cacheDir, built or not.
func Path(cacheDir string) string { return filepath.Join(Dir(cacheDir), "vmlinux") }

// Find returns the cached vmlinux when it is complete. The build publishes
// a kernel dir by one rename, with vmlinux, config and release inside; a
// dir missing any of them (copied by hand, half-deleted) is not returned.
func Find(cacheDir string) (string, bool) {
	p := Path(cacheDir)
	if !complete(filepath.Dir(p)) {
		return "", false
	}
	return p, true
}

func complete(dir string) bool {
	for _, name := range []string{"vmlinux", "config", "release"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			return false
		}
	}
	return true
}

// maxRelease bounds the release file read back (a kernel release string
// is at most 64 bytes: __NEW_UTS_LEN).
const maxRelease = 64

// Release returns the kernel release (`uname -r` in the guest) of the
// vmlinux at path, from the release file the build stored beside it.
func Release(vmlinux string) (string, error) {
	f, err := os.Open(filepath.Join(filepath.Dir(vmlinux), "release"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("kernel %s has no release file (rebuild it with make kernel): %w", vmlinux, errdefs.ErrNotFound)
		}
		return "", fmt.Errorf("kernel release: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRelease+2))
	if err != nil {
		return "", fmt.Errorf("kernel release: %w", err)
	}
	rel := strings.TrimSpace(string(b))
	if rel == "" || len(rel) > maxRelease || strings.ContainsAny(rel, " \t\n/") {
		return "", fmt.Errorf("kernel %s: malformed release file %q (rebuild it with make kernel): %w", vmlinux, rel, errdefs.ErrInvalid)
	}
	return rel, nil
}

// Cmdline is the kernel command line every Cube guest boots with; the VMM
// driver appends its devices and the agent's arguments. It carries nothing
// secret (the host's users can read it in ps).
//
// The kernel has no ACPI and no PCI: its devices are virtio-mmio ones
// named on the command line. QEMU's microvm machine adds those
// (virtio_mmio.device=...) only with acpi=off; with ACPI on, the guest
// finds no drives. Firecracker always adds them.
//   - console=ttyS0 quiet: the serial console, errors only (printing is
//     slow under emulation);
//   - reboot=t panic=-1: reboot through the triple fault, at once on a
//     panic, so that with QEMU's -no-reboot a guest's reboot() or panic
//     ends the VMM (there is no ACPI to power off with);
//   - lpj, tsc=reliable: no delay-loop or TSC calibration at boot;
//   - random.trust_cpu=on: the CRNG is ready at once (RDRAND), so the
//     agent's getrandom does not wait for entropy.
const Cmdline = "console=ttyS0 quiet reboot=t panic=-1 lpj=9781696 tsc=reliable random.trust_cpu=on"
