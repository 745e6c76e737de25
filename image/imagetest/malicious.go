package imagetest

import (
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Attack names a hostile layer. Every attack must make unpacking fail (in
// Cube: with image.ErrUnsafeLayer) and leave the host untouched.
//
// The escapes aim at a directory outside the rootfs that the test chooses
// (outside, an absolute path, usually a Sentinel's Dir) rather than at
// /etc: a buggy unpacker then damages a temp dir, not the machine.
type Attack string

const (
	// PathTraversal writes ../../…/OUTSIDE/sentinel.
	PathTraversal Attack = "path-traversal"
	// AbsoluteSymlinkEscape makes evil -> OUTSIDE, then writes evil/sentinel.
	AbsoluteSymlinkEscape Attack = "absolute-symlink-escape"
	// RootSymlinkEscape makes evil -> /, then writes evil/OUTSIDE/sentinel.
	RootSymlinkEscape Attack = "root-symlink-escape"
	// RelativeSymlinkEscape makes evil -> ../../…/.. , then writes
	// evil/OUTSIDE/sentinel.
	RelativeSymlinkEscape Attack = "relative-symlink-escape"
	// HardlinkEscape hard-links evil to ../../…/OUTSIDE/sentinel.
	HardlinkEscape Attack = "hardlink-escape"
	// HardlinkThroughSymlink makes evil -> OUTSIDE, then hard-links link to
	// evil/sentinel.
	HardlinkThroughSymlink Attack = "hardlink-through-symlink"
	// WhiteoutTraversal whites out ../../…/OUTSIDE/sentinel.
	WhiteoutTraversal Attack = "whiteout-traversal"
	// WhiteoutThroughSymlink makes evil -> OUTSIDE, then whites out
	// evil/sentinel.
	WhiteoutThroughSymlink Attack = "whiteout-through-symlink"
	// OpaqueThroughSymlink makes evil -> OUTSIDE, then marks evil opaque
	// (which would empty OUTSIDE).
	OpaqueThroughSymlink Attack = "opaque-through-symlink"
	// CharDeviceNode creates dev/evil as /dev/mem (c 1:1).
	CharDeviceNode Attack = "char-device"
	// BlockDeviceNode creates dev/evil as /dev/sda (b 8:0).
	BlockDeviceNode Attack = "block-device"
)

// Attacks lists every Attack.
func Attacks() []Attack {
	return []Attack{
		PathTraversal, AbsoluteSymlinkEscape, RootSymlinkEscape, RelativeSymlinkEscape,
		HardlinkEscape, HardlinkThroughSymlink, WhiteoutTraversal,
		WhiteoutThroughSymlink, OpaqueThroughSymlink, CharDeviceNode, BlockDeviceNode,
	}
}

// up climbs from any plausible rootfs location to "/".
var up = strings.Repeat("../", 40)

// Payload is what escaping writes put in the sentinel's place.
const Payload = "pwned by a hostile image layer\n"

// MaliciousEntries returns the entries of attack kind aimed at the
// absolute directory outside, and the name of the entry an unpacker must
// refuse (for checking that its error names it).
func MaliciousEntries(kind Attack, outside string) (entries []Entry, offending string) {
	rel := strings.TrimPrefix(path.Clean(outside), "/")
	target := path.Join(rel, SentinelName) // relative to "/"
	switch kind {
	case PathTraversal:
		e := File(up+target, 0o644, Payload)
		return []Entry{e}, e.Header.Name
	case AbsoluteSymlinkEscape:
		e := File("evil/"+SentinelName, 0o644, Payload)
		return []Entry{Symlink("evil", outside), e}, e.Header.Name
	case RootSymlinkEscape:
		e := File("evil/"+target, 0o644, Payload)
		return []Entry{Symlink("evil", "/"), e}, e.Header.Name
	case RelativeSymlinkEscape:
		e := File("evil/"+target, 0o644, Payload)
		return []Entry{Symlink("evil", strings.TrimSuffix(up, "/")), e}, e.Header.Name
	case HardlinkEscape:
		e := Hardlink("evil", up+target)
		return []Entry{e}, e.Header.Name
	case HardlinkThroughSymlink:
		e := Hardlink("link", "evil/"+SentinelName)
		return []Entry{Symlink("evil", outside), e}, e.Header.Name
	case WhiteoutTraversal:
		e := Whiteout(up + target)
		return []Entry{e}, e.Header.Name
	case WhiteoutThroughSymlink:
		e := Whiteout("evil/" + SentinelName)
		return []Entry{Symlink("evil", outside), e}, e.Header.Name
	case OpaqueThroughSymlink:
		e := Opaque("evil")
		return []Entry{Symlink("evil", outside), e}, e.Header.Name
	case CharDeviceNode:
		e := CharDevice("dev/evil", 1, 1)
		return []Entry{e}, e.Header.Name
	case BlockDeviceNode:
		e := BlockDevice("dev/evil", 8, 0)
		return []Entry{e}, e.Header.Name
	}
	panic("imagetest: unknown attack " + string(kind))
}

// MaliciousLayerTar returns the uncompressed layer tar of attack kind aimed
// at outside.
func MaliciousLayerTar(t testing.TB, kind Attack, outside string) []byte {
	t.Helper()
	es, _ := MaliciousEntries(kind, outside)
	return LayerTar(t, es...)
}

// BuildMalicious writes an importable OCI image-layout tar in dir
// (t.TempDir() when "") whose image is busybox plus the hostile layer of
// kind aimed at outside, and returns its path. The image is named
// "cube.test/malicious/KIND:latest" unless WithRef says otherwise.
func BuildMalicious(t testing.TB, dir string, kind Attack, outside string, opts ...Option) string {
	t.Helper()
	es, _ := MaliciousEntries(kind, outside)
	opts = append([]Option{WithRef("cube.test/malicious/" + string(kind) + ":latest")}, opts...)
	return BuildBusybox(t, dir, append(opts, WithLayer(es...))...)
}

// SentinelName is the file a Sentinel plants.
const SentinelName = "sentinel"

// SentinelContent is the content a Sentinel plants.
const SentinelContent = "original sentinel content\n"

// Sentinel is a file outside any rootfs that a hostile layer tries to
// reach; Check proves it was not.
type Sentinel struct {
	// Dir is the sentinel's own temp dir: aim attacks at it.
	Dir string
	// File is Dir/sentinel.
	File string
}

// PlantSentinel makes a fresh sentinel in its own t.TempDir().
func PlantSentinel(t testing.TB) *Sentinel {
	t.Helper()
	dir := t.TempDir()
	s := &Sentinel{Dir: dir, File: path.Join(dir, SentinelName)}
	if err := os.WriteFile(s.File, []byte(SentinelContent), 0o644); err != nil {
		t.Fatalf("imagetest: plant sentinel: %v", err)
	}
	return s
}

// Check fails the test unless the sentinel directory holds exactly the
// sentinel, unchanged: same content and mode, one link, no new files.
func (s *Sentinel) Check(t testing.TB) {
	t.Helper()
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		t.Fatalf("sentinel dir %s: %v", s.Dir, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{SentinelName}) {
		t.Errorf("sentinel dir %s holds %q; want only %q", s.Dir, names, SentinelName)
	}
	fi, err := os.Lstat(s.File)
	if err != nil {
		t.Fatalf("sentinel %s: %v", s.File, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Errorf("sentinel %s has mode %v; want -rw-r--r--", s.File, fi.Mode())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink != 1 {
		t.Errorf("sentinel %s has %d links; want 1 (something hard-linked it)", s.File, st.Nlink)
	}
	b, err := os.ReadFile(s.File)
	if err != nil {
		t.Fatalf("sentinel %s: %v", s.File, err)
	}
	if string(b) != SentinelContent {
		t.Errorf("sentinel %s = %q; want %q", s.File, b, SentinelContent)
	}
}
