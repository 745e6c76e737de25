package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-platform/cube/errdefs"
)

// entry is one parsed newc header.
type entry struct {
	name                string
	ino, mode, uid, gid uint32
	nlink, mtime        uint32
	rmajor, rminor      uint32
	data                []byte
}

// readNewc parses a newc archive, checking magic, padding and trailer.
func readNewc(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		f := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		e := entry{ino: f(0), mode: f(1), uid: f(2), gid: f(3), nlink: f(4), mtime: f(5), rmajor: f(9), rminor: f(10)}
		size, namesize := int(f(6)), int(f(11))
		off += 110
		e.name = string(b[off : off+namesize-1])
		if b[off+namesize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", e.name)
		}
		off += namesize
		if off%4 != 0 {
			off += 4 - off%4
		}
		e.data = b[off : off+size]
		off += size
		if off%4 != 0 {
			off += 4 - off%4
		}
		if e.name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	agent, cinit := []byte("\x7fELF fake agent bytes"), []byte("\x7fELF fake init")
	var a, b bytes.Buffer
	if err := Write(&a, Entries(agent, cinit)); err != nil {
		t.Fatal(err)
	}
	// Order of the input must not matter.
	rev := Entries(agent, cinit)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if err := Write(&b, rev); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("Write of the same files in another order gave different bytes")
	}
	if a.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", a.Len())
	}
}

func TestEntriesList(t *testing.T) {
	agent, cinit := []byte("agent!"), []byte("init?")
	var buf bytes.Buffer
	if err := Write(&buf, Entries(agent, cinit)); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	var names []string
	for _, e := range readNewc(t, buf.Bytes()) {
		if e.uid != 0 || e.gid != 0 || e.mtime != 0 {
			t.Errorf("%s: uid %d gid %d mtime %d; want 0 0 0", e.name, e.uid, e.gid, e.mtime)
		}
		got[e.name] = fmt.Sprintf("%06o %d,%d", e.mode, e.rmajor, e.rminor)
		names = append(names, e.name)
		if e.name == "init" && !bytes.Equal(e.data, agent) {
			t.Errorf("init holds %q; want the agent %q", e.data, agent)
		}
		if e.name == InitName && !bytes.Equal(e.data, cinit) {
			t.Errorf("%s holds %q; want the container init %q", InitName, e.data, cinit)
		}
	}
	want := map[string]string{
		"cube-init":   "100755 0,0",
		"dev":         "040755 0,0",
		"dev/console": "020600 5,1",
		"init":        "100755 0,0",
		"mnt":         "040755 0,0",
		"proc":        "040555 0,0",
		"run":         "040755 0,0",
		"sys":         "040555 0,0",
		"tmp":         "041777 0,0",
	}
	if len(got) != len(want) {
		t.Errorf("entries %v; want exactly %v", names, want)
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("entry %s = %q; want %q", n, got[n], w)
		}
	}
	for _, e := range Entries(agent, nil) {
		if e.Name == InitName {
			t.Errorf("Entries(agent, nil) holds %s; want it left out", InitName)
		}
	}
}

// TestCpioReadsIt checks the archive with GNU cpio, an independent reader:
// it lists the same entries and extracts /init byte for byte.
func TestCpioReadsIt(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("cpio not found but CI=true: apt-get install cpio")
		}
		t.Skip("cpio not found (apt-get install cpio)")
	}
	agent := bytes.Repeat([]byte("0123456789"), 1001) // not a multiple of 4
	cinit := bytes.Repeat([]byte("abc"), 333)
	dir := t.TempDir()
	out := filepath.Join(dir, "initramfs.cpio")
	bin, initBin := filepath.Join(dir, "agent"), filepath.Join(dir, "cube-init")
	if err := os.WriteFile(bin, agent, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initBin, cinit, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Build(bin, initBin, out); err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command("cpio", "-it", "--quiet", "-F", out).Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	if got, want := strings.Fields(string(list)), []string{"cube-init", "dev", "dev/console", "init", "mnt", "proc", "run", "sys", "tmp"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("cpio -t lists %v; want %v", got, want)
	}
	x := t.TempDir()
	cmd := exec.Command("cpio", "-i", "--quiet", "--no-absolute-filenames", "-F", out, "init", InitName)
	cmd.Dir = x
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, b)
	}
	for name, want := range map[string][]byte{"init": agent, InitName: cinit} {
		data, err := os.ReadFile(filepath.Join(x, name))
		if err != nil || !bytes.Equal(data, want) {
			t.Errorf("extracted %s differs from its binary (err %v)", name, err)
		}
		if fi, err := os.Stat(filepath.Join(x, name)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("extracted %s mode %v (err %v); want 0755", name, fi.Mode(), err)
		}
	}
}

func TestWriteRejects(t *testing.T) {
	for _, f := range []File{
		{Name: "/init", Mode: 0o755},
		{Name: "../x", Mode: 0o644},
		{Name: "a//b", Mode: 0o644},
		{Name: "", Mode: 0o644},
		{Name: "TRAILER!!!", Mode: 0o644},
		{Name: "s", Mode: fs.ModeSymlink | 0o777},
		{Name: "p", Mode: fs.ModeNamedPipe | 0o644},
	} {
		err := Write(&bytes.Buffer{}, []File{f})
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Write(%+v) = %v; want ErrInvalid", f, err)
		}
	}
	err := Write(&bytes.Buffer{}, []File{{Name: "a", Mode: 0o644}, {Name: "a", Mode: 0o644}})
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Write of a duplicate = %v; want ErrInvalid", err)
	}
}

func TestCached(t *testing.T) {
	cache := t.TempDir()
	bin, initBin := filepath.Join(t.TempDir(), "agent"), filepath.Join(t.TempDir(), "cube-init")
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(bin, "agent v1")
	write(initBin, "init v1")
	p1, err := Cached(cache, bin, initBin)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cache, "initramfs", Key([]byte("agent v1"), []byte("init v1")), "initramfs.cpio"); p1 != want {
		t.Errorf("Cached = %s; want %s", p1, want)
	}
	first, err := os.ReadFile(p1)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Cached(cache, bin, initBin)
	if err != nil || again != p1 {
		t.Errorf("Cached again = %s, %v; want %s", again, err, p1)
	}
	var want bytes.Buffer
	if err := Write(&want, Entries([]byte("agent v1"), []byte("init v1"))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, want.Bytes()) {
		t.Error("cached archive differs from Write's output")
	}
	write(bin, "agent v2")
	p2, err := Cached(cache, bin, initBin)
	if err != nil {
		t.Fatal(err)
	}
	if p2 == p1 {
		t.Errorf("a changed agent kept the path %s", p1)
	}
	write(initBin, "init v2")
	p3, err := Cached(cache, bin, initBin)
	if err != nil {
		t.Fatal(err)
	}
	if p3 == p2 || p3 == p1 {
		t.Errorf("a changed container init kept the path %s", p3)
	}
	// No temp files are left beside the archives.
	for _, p := range []string{p1, p2, p3} {
		ents, _ := os.ReadDir(filepath.Dir(p))
		if len(ents) != 1 {
			t.Errorf("%s holds %d entries; want only initramfs.cpio", filepath.Dir(p), len(ents))
		}
	}
	if _, err := Cached(cache, filepath.Join(cache, "missing"), initBin); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Cached(missing agent) = %v; want ErrNotFound", err)
	}
	if _, err := Cached(cache, bin, filepath.Join(cache, "missing")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Cached(missing container init) = %v; want ErrNotFound", err)
	}
}

func TestKeyCoversBoth(t *testing.T) {
	// The length prefixes keep a byte moved from one binary to the other
	// from giving the same key.
	for _, tc := range [][2][2]string{
		{{"ab", "c"}, {"a", "bc"}},
		{{"agent", "init"}, {"agent", "init2"}},
		{{"agent", "init"}, {"agent2", "init"}},
	} {
		a, b := tc[0], tc[1]
		if Key([]byte(a[0]), []byte(a[1])) == Key([]byte(b[0]), []byte(b[1])) {
			t.Errorf("Key(%q, %q) == Key(%q, %q); want them to differ", a[0], a[1], b[0], b[1])
		}
	}
}

// TestCachedPrunes: writing a new archive keeps the KeepCached most
// recently used ones and those used within pruneMinAge, and removes the
// rest; a hit marks its archive used, and dirs that are not archives are
// left alone.
func TestCachedPrunes(t *testing.T) {
	cache := t.TempDir()
	bins := t.TempDir()
	initBin := filepath.Join(bins, "cube-init")
	if err := os.WriteFile(initBin, []byte("init"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * pruneMinAge)
	build := func(i int) string {
		t.Helper()
		bin := filepath.Join(bins, fmt.Sprintf("agent%d", i))
		if err := os.WriteFile(bin, []byte(fmt.Sprintf("agent v%d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
		p, err := Cached(cache, bin, initBin)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Six old archives, used one minute apart (0 the least recently).
	var paths []string
	for i := range 6 {
		p := build(i)
		at := old.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	// A hit on the oldest makes it the most recently used.
	if p := build(0); p != paths[0] {
		t.Fatalf("Cached(agent v0) = %s; want %s", p, paths[0])
	}
	notOurs := filepath.Join(cache, "initramfs", "building")
	if err := os.MkdirAll(notOurs, 0o755); err != nil {
		t.Fatal(err)
	}
	// A new archive: the newest four are 6 (new), 0 (hit), 5 and 4.
	paths = append(paths, build(6))
	for i, p := range paths {
		_, err := os.Stat(p)
		if kept, want := err == nil, i == 0 || i >= 4; kept != want {
			t.Errorf("archive %d kept = %v; want %v", i, kept, want)
		}
	}
	if _, err := os.Stat(notOurs); err != nil {
		t.Errorf("a dir that is not an archive was removed: %v", err)
	}
	// Archives used within pruneMinAge are all kept, even beyond
	// KeepCached.
	for i := 7; i < 7+KeepCached+1; i++ {
		paths = append(paths, build(i))
	}
	for i, p := range paths[6:] {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("recently used archive %d removed: %v", i+6, err)
		}
	}
}
