// Package initramfs writes the guest's initramfs: a deterministic,
// uncompressed newc cpio whose /init is the guest agent and whose
// /cube-init is the containers' init (cmd/cube-init), with the few dirs
// and the /dev/console node the agent and early printk need.
//
// The same binaries always give the same bytes (fixed mtimes, owner root,
// sorted entries, inode numbers by position), so the archive can be
// cached by the binaries' hash. The package depends only on the standard
// library and errdefs; it must not import the rest of Cube.
package initramfs

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cube-platform/cube/errdefs"
)

// File is one entry of the archive.
type File struct {
	// Name is the path inside the archive, relative ("init", "dev/console").
	Name string
	// Mode holds the type (fs.ModeDir, fs.ModeSymlink, fs.ModeDevice|
	// fs.ModeCharDevice, or none for a regular file) and permission bits
	// (with fs.ModeSticky, fs.ModeSetuid, fs.ModeSetgid).
	Mode fs.FileMode
	// Data is a regular file's content.
	Data []byte
	// Linkname is a symlink's target.
	Linkname string
	// Major and Minor are a device node's numbers.
	Major, Minor uint32
}

// MaxAgentSize bounds each binary (agent, container init) Build reads.
const MaxAgentSize = 256 << 20

// InitName is the container init's entry, at the root: guest/agent's
// InitPath is "/"+InitName.
const InitName = "cube-init"

// layoutVersion is part of Cached's key: bump it when Entries changes, so
// an old archive is not reused for the new layout.
const layoutVersion = "2"

// Entries returns the archive's files for an agent and a container init
// binary: /init (the agent, 0755), /cube-init (the init, 0755; left out
// when cinit is nil, for a guest that is not Cube's agent), /dev/console
// (char 5,1, 0600), and the dirs /dev, /proc, /sys, /tmp (1777), /run,
// /mnt.
func Entries(agent, cinit []byte) []File {
	files := []File{
		{Name: "dev", Mode: fs.ModeDir | 0o755},
		{Name: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Name: "init", Mode: 0o755, Data: agent},
		{Name: "mnt", Mode: fs.ModeDir | 0o755},
		{Name: "proc", Mode: fs.ModeDir | 0o555},
		{Name: "run", Mode: fs.ModeDir | 0o755},
		{Name: "sys", Mode: fs.ModeDir | 0o555},
		{Name: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	}
	if cinit != nil {
		files = append(files, File{Name: InitName, Mode: 0o755, Data: cinit})
	}
	return files
}

// Write writes files as a newc cpio archive, sorted by name (so a dir
// always precedes what is in it), owner root, mtime 0, with inode numbers
// by position, and the trailer.
func Write(w io.Writer, files []File) error {
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	bw := bufio.NewWriter(w)
	for i, f := range sorted {
		if err := checkName(f.Name); err != nil {
			return err
		}
		if i > 0 && sorted[i-1].Name == f.Name {
			return fmt.Errorf("initramfs: %q twice: %w", f.Name, errdefs.ErrInvalid)
		}
		mode, data, err := newcMode(f)
		if err != nil {
			return err
		}
		nlink := uint32(1)
		if f.Mode.IsDir() {
			nlink = 2
		}
		if err := writeEntry(bw, uint32(i+1), mode, nlink, f.Major, f.Minor, f.Name, data); err != nil {
			return err
		}
	}
	if err := writeEntry(bw, 0, 0, 1, 0, 0, "TRAILER!!!", nil); err != nil {
		return err
	}
	return bw.Flush()
}

func checkName(name string) error {
	if name == "" || name == "." || path.IsAbs(name) || path.Clean(name) != name ||
		name == ".." || strings.HasPrefix(name, "../") || strings.ContainsRune(name, 0) || name == "TRAILER!!!" {
		return fmt.Errorf("initramfs: bad entry name %q (want a clean relative path): %w", name, errdefs.ErrInvalid)
	}
	return nil
}

// Mode bits of the newc header (those of stat(2)).
const (
	sIFDIR  = 0o040000
	sIFREG  = 0o100000
	sIFLNK  = 0o120000
	sIFCHR  = 0o020000
	sIFBLK  = 0o060000
	sISUID  = 0o4000
	sISGID  = 0o2000
	sISVTX  = 0o1000
	modeMax = 0o7777
)

func newcMode(f File) (uint32, []byte, error) {
	m := uint32(f.Mode.Perm())
	if f.Mode&fs.ModeSetuid != 0 {
		m |= sISUID
	}
	if f.Mode&fs.ModeSetgid != 0 {
		m |= sISGID
	}
	if f.Mode&fs.ModeSticky != 0 {
		m |= sISVTX
	}
	switch t := f.Mode.Type(); {
	case t == 0:
		return m | sIFREG, f.Data, nil
	case t == fs.ModeDir:
		return m | sIFDIR, nil, nil
	case t == fs.ModeSymlink:
		if f.Linkname == "" {
			return 0, nil, fmt.Errorf("initramfs: symlink %q has no target: %w", f.Name, errdefs.ErrInvalid)
		}
		return m | sIFLNK, []byte(f.Linkname), nil
	case t == fs.ModeDevice|fs.ModeCharDevice:
		return m | sIFCHR, nil, nil
	case t == fs.ModeDevice:
		return m | sIFBLK, nil, nil
	default:
		return 0, nil, fmt.Errorf("initramfs: %q has unsupported type %v: %w", f.Name, t, errdefs.ErrInvalid)
	}
}

// writeEntry writes one newc header, the NUL-terminated name and the
// data, each padded to 4 bytes.
func writeEntry(w io.Writer, ino, mode, nlink, rmajor, rminor uint32, name string, data []byte) error {
	if uint64(len(data)) > 0xffffffff {
		return fmt.Errorf("initramfs: %q is larger than newc's 4 GiB: %w", name, errdefs.ErrInvalid)
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	var b []byte
	b = append(b, hdr...)
	b = append(b, name...)
	b = append(b, 0)
	b = pad4(b)
	if _, err := w.Write(b); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	_, err := w.Write(make([]byte, (4-len(data)%4)%4))
	return err
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// readBinary reads the binary at path (what names it in errors: agent,
// container init), bounded by MaxAgentSize.
func readBinary(what, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("initramfs: %s %s not found (build it with make build): %w", what, path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("initramfs: %s %s is not a regular file: %w", what, path, errdefs.ErrInvalid)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxAgentSize+1))
	if err != nil {
		return nil, fmt.Errorf("initramfs: read %s: %w", what, err)
	}
	if len(data) > MaxAgentSize {
		return nil, fmt.Errorf("initramfs: %s %s is larger than %d MiB: %w", what, path, MaxAgentSize>>20, errdefs.ErrInvalid)
	}
	return data, nil
}

// readBinaries reads the agent and the container init (none for "").
func readBinaries(agentBinary, initBinary string) (agent, cinit []byte, err error) {
	if agent, err = readBinary("agent", agentBinary); err != nil {
		return nil, nil, err
	}
	if initBinary == "" {
		return agent, nil, nil
	}
	if cinit, err = readBinary("container init", initBinary); err != nil {
		return nil, nil, err
	}
	return agent, cinit, nil
}

// Build writes the initramfs of agentBinary and initBinary (cmd/cube-init;
// "" leaves it out, for a guest that is not Cube's agent) to outPath,
// atomically: a temp file beside it, synced, then renamed.
func Build(agentBinary, initBinary, outPath string) error {
	agent, cinit, err := readBinaries(agentBinary, initBinary)
	if err != nil {
		return err
	}
	return writeFile(outPath, agent, cinit)
}

func writeFile(outPath string, agent, cinit []byte) (err error) {
	dir := filepath.Dir(outPath)
	tmp, err := os.CreateTemp(dir, ".initramfs-*")
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := Write(tmp, Entries(agent, cinit)); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), outPath); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("initramfs: sync %s: %w", dir, err)
	}
	return nil
}

// Key is Cached's cache key for the binaries' content: the first 16 hex
// digits of sha256 over the layout version and both binaries, each after
// its length (no two pairs hash the same bytes).
func Key(agent, cinit []byte) string {
	h := sha256.New()
	io.WriteString(h, "cube-initramfs "+layoutVersion+"\n")
	for _, b := range [][]byte{agent, cinit} {
		fmt.Fprintf(h, "%d\n", len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Cache pruning: Cached keeps the KeepCached most recently used archives
// of a cache dir, and never removes one used in the last pruneMinAge (a
// caller may be about to hand its path to a VMM). Removing an archive a
// running VM booted from is safe: QEMU read the whole file at start (and
// on Linux an unlinked file lives on for whoever still has it open); only
// a VM started later from that path would miss it, and a caller that
// keeps a path (node/vmhost) asks Cached again before each use, which
// marks it used (or rebuilds it).
const (
	KeepCached  = 4
	pruneMinAge = time.Hour
)

// Cached returns the initramfs of agentBinary and initBinary under
// cacheDir/initramfs/<key>/initramfs.cpio, building it the first time
// (and then pruning the cache); a hit marks it used (its mtime).
// Concurrent callers (in any process) may both build it; each writes a
// temp file and renames it over the same bytes, so a reader never sees a
// partial archive.
func Cached(cacheDir, agentBinary, initBinary string) (string, error) {
	agent, cinit, err := readBinaries(agentBinary, initBinary)
	if err != nil {
		return "", err
	}
	root := filepath.Join(cacheDir, "initramfs")
	dir := filepath.Join(root, Key(agent, cinit))
	out := filepath.Join(dir, "initramfs.cpio")
	if fi, err := os.Stat(out); err == nil && fi.Mode().IsRegular() {
		now := time.Now()
		os.Chtimes(out, now, now)
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	if err := writeFile(out, agent, cinit); err != nil {
		return "", err
	}
	// A failed prune costs disk, not the boot.
	prune(root, KeepCached, pruneMinAge, time.Now())
	return out, nil
}

// prune removes the archive dirs under root beyond the keep most recently
// used (by their archive's mtime), except those used within minAge of
// now. A dir without an archive (another caller's build under way, or
// not ours) is left alone.
func prune(root string, keep int, minAge time.Duration, now time.Time) error {
	ents, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	type cached struct {
		dir  string
		used time.Time
	}
	var all []cached
	for _, e := range ents {
		if !e.IsDir() || len(e.Name()) != 16 || strings.Trim(e.Name(), "0123456789abcdef") != "" {
			continue
		}
		dir := filepath.Join(root, e.Name())
		fi, err := os.Lstat(filepath.Join(dir, "initramfs.cpio"))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		all = append(all, cached{dir, fi.ModTime()})
	}
	slices.SortFunc(all, func(a, b cached) int { return b.used.Compare(a.used) })
	var errs []error
	for i, c := range all {
		if i < keep || now.Sub(c.used) < minAge {
			continue
		}
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
