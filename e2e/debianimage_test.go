package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-platform/cube/image/imagetest"
	gcr "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The realistic image is made of this Debian host's own files, so that it
// needs no network: bash and dash, a few coreutils, python3.11 with most
// of its standard library, every shared library they need (found through
// their ELF DT_NEEDED entries) and the dynamic loader, laid out as Debian
// 12 lays them out (merged /usr: /bin, /lib, /lib64 and /sbin are
// symlinks, mirrored from the host).
const (
	debianImageRef = "cube.test/debian-realistic:v1"
	debianPython   = "/usr/bin/python3.11"
	debianPyLib    = "/usr/lib/python3.11"
	// debianAppUID owns the home directory and the app's data directory;
	// the image's USER is its name, resolved through the image's
	// /etc/passwd.
	debianAppUID = 1000
)

// debianBinaries are copied with their libraries (symlinks on the way,
// such as /bin -> usr/bin and /bin/sh -> dash, are kept as symlinks).
var debianBinaries = []string{
	"/bin/bash", "/bin/sh", "/usr/bin/python3", debianPython,
	"/usr/bin/cat", "/usr/bin/echo", "/usr/bin/env", "/usr/bin/groups", "/usr/bin/head",
	"/usr/bin/id", "/usr/bin/ls", "/usr/bin/mkdir", "/usr/bin/rm", "/usr/bin/sleep",
	"/usr/bin/stat", "/usr/bin/sync", "/usr/bin/touch", "/usr/bin/true", "/usr/bin/uname",
	"/usr/bin/wc", "/usr/bin/whoami",
}

// debianHostFiles are other host files the image carries as they are.
var debianHostFiles = []string{"/etc/os-release", "/etc/debian_version"}

// debianLibDirs are where DT_NEEDED names are looked up, in order.
var debianLibDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib"}

// Parts of the standard library a server does not need: tests, GUIs,
// build support (config-* holds the 25 MiB static libpython), docs.
var (
	debianPySkipDirs = []string{"test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "ensurepip",
		"lib2to3", "pydoc_data", "distutils", "venv", "unittest", "config-3.11-x86_64-linux-gnu", "site-packages", "dist-packages"}
	debianPySkipModules = []string{"_test", "_xx", "xxlimited", "_ctypes_test", "_curses", "readline", "_tkinter",
		"nis", "ossaudiodev", "audioop"}
)

var debianImage struct {
	once sync.Once
	path string        // the OCI archive, beside the test binaries
	size int64         // its size in bytes
	took time.Duration // how long the build took
}

// buildDebianImage returns the path of an OCI archive of the realistic
// image named debianImageRef, whose USER is app and whose command runs
// realisticWorkload (as /app/server.py). It is built once per test
// binary, in the binaries' temporary directory. Without python3.11 it skips (fails under
// CI=true, which must have it).
func buildDebianImage(t *testing.T) string {
	t.Helper()
	for _, p := range append([]string{debianPyLib}, debianBinaries...) {
		if _, err := os.Stat(p); err != nil {
			imagetest.Missing(t, fmt.Sprintf("the realistic image is made of this host's files and %s is missing (%v); "+
				"install it with `apt-get install -y python3.11 coreutils bash`", p, err))
		}
	}
	debianImage.once.Do(func() {
		start := time.Now()
		b := &rootfsBuilder{entries: map[string]imagetest.Entry{}}
		if err := b.build(realisticWorkload); err != nil {
			t.Fatalf("realistic image: %v", err)
		}
		img := b.image(t)
		path := filepath.Join(filepath.Dir(cubeBin), "debian-realistic.oci.tar")
		imagetest.WriteOCIArchive(t, path, imagetest.LayoutEntry{Image: img, Annotations: imagetest.RefAnnotations(debianImageRef)})
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		debianImage.path, debianImage.size, debianImage.took = path, fi.Size(), time.Since(start)
	})
	if debianImage.path == "" {
		t.Fatal("realistic image: an earlier build failed")
	}
	t.Logf("realistic image: %.1f MiB archive, built in %s", float64(debianImage.size)/(1<<20), debianImage.took.Round(time.Millisecond))
	return debianImage.path
}

// rootfsBuilder collects the entries of a one-layer root filesystem,
// keyed by path (no leading slash).
type rootfsBuilder struct {
	entries map[string]imagetest.Entry
}

func (b *rootfsBuilder) build(workload string) error {
	for _, d := range []struct {
		path     string
		mode     int64
		uid, gid int
	}{
		{"dev", 0o755, 0, 0}, {"proc", 0o555, 0, 0}, {"sys", 0o555, 0, 0}, {"run", 0o755, 0, 0},
		{"root", 0o700, 0, 0}, {"tmp", 0o1777, 0, 0}, {"etc", 0o755, 0, 0}, {"app", 0o755, 0, 0},
		{"home", 0o755, 0, 0}, {"home/app", 0o750, debianAppUID, debianAppUID},
		{"var", 0o755, 0, 0}, {"var/lib", 0o755, 0, 0}, {"var/lib/app", 0o750, debianAppUID, debianAppUID},
	} {
		b.put(imagetest.Owned(imagetest.Dir(d.path+"/", d.mode), d.uid, d.gid))
	}
	b.put(imagetest.File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/bash\n"+
		"app:x:1000:1000:App,,,:/home/app:/bin/bash\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"))
	// app is also in group shm: Docker would add it as a supplementary
	// group; the test records what each runtime does.
	b.put(imagetest.File("etc/group", 0o644, "root:x:0:\napp:x:1000:\nshm:x:1001:app\nnogroup:x:65534:\n"))
	b.put(imagetest.File("etc/nsswitch.conf", 0o644, "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"))
	b.put(imagetest.File("app/server.py", 0o755, workload))

	var elfs []string
	for _, p := range debianBinaries {
		if err := b.add(p, 0); err != nil {
			return err
		}
		elfs = append(elfs, p)
	}
	for _, p := range debianHostFiles {
		if err := b.add(p, 0); err != nil {
			return err
		}
	}
	pyFiles, err := b.pythonLib()
	if err != nil {
		return err
	}
	elfs = append(elfs, pyFiles...)
	return b.addLibraries(elfs)
}

// pythonLib adds the standard library less debianPySkip*, and returns
// its extension modules (ELF files whose libraries are needed too).
func (b *rootfsBuilder) pythonLib() ([]string, error) {
	var exts []string
	err := filepath.WalkDir(debianPyLib, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != debianPyLib && slices.Contains(debianPySkipDirs, name) {
				return filepath.SkipDir
			}
			return b.add(p, 0)
		}
		// Only the plain byte code: -O and -OO caches are never used.
		if strings.Contains(name, ".opt-") {
			return nil
		}
		if filepath.Base(filepath.Dir(p)) == "lib-dynload" {
			for _, skip := range debianPySkipModules {
				if strings.HasPrefix(name, skip) {
					return nil
				}
			}
			exts = append(exts, p)
		}
		return b.add(p, 0)
	})
	return exts, err
}

// addLibraries adds the dynamic loader and every library the ELF files
// need, transitively, found by DT_NEEDED name in debianLibDirs.
func (b *rootfsBuilder) addLibraries(files []string) error {
	seen := map[string]bool{}
	queue := slices.Clone(files)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		f, err := elf.Open(p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		needed, err := f.DynString(elf.DT_NEEDED)
		if err != nil {
			f.Close()
			return fmt.Errorf("%s: dynamic section: %w", p, err)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				interp, err := io.ReadAll(prog.Open())
				if err != nil {
					f.Close()
					return fmt.Errorf("%s: interpreter: %w", p, err)
				}
				loader := strings.TrimRight(string(interp), "\x00")
				if err := b.add(loader, 0); err != nil {
					f.Close()
					return err
				}
			}
		}
		f.Close()
		for _, lib := range needed {
			found := ""
			for _, dir := range debianLibDirs {
				if _, err := os.Stat(filepath.Join(dir, lib)); err == nil {
					found = filepath.Join(dir, lib)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("%s needs %s, which is in none of %v", p, lib, debianLibDirs)
			}
			if err := b.add(found, 0); err != nil {
				return err
			}
			queue = append(queue, found)
		}
	}
	return nil
}

// add copies the host path p into the image: each directory on the way
// (root-owned, with the host's mode), each symlink on the way as a symlink
// (its target verbatim), then following it, and the file itself with its
// mode and modification time (Python checks its byte-code caches against
// their sources' times).
func (b *rootfsBuilder) add(p string, depth int) error {
	if depth > 16 {
		return fmt.Errorf("%s: too many symlinks", p)
	}
	p = filepath.Clean(p)
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	cur := "/"
	for i, part := range parts {
		next := filepath.Join(cur, part)
		rel := strings.TrimPrefix(next, "/")
		fi, err := os.Lstat(next)
		if err != nil {
			return err
		}
		mtime := fi.ModTime().Truncate(time.Second)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(next)
			if err != nil {
				return err
			}
			e := imagetest.Symlink(rel, target)
			e.Header.ModTime = mtime
			b.put(e)
			if !filepath.IsAbs(target) {
				target = filepath.Join(cur, target)
			}
			return b.add(filepath.Join(append([]string{target}, parts[i+1:]...)...), depth+1)
		case fi.IsDir():
			if _, ok := b.entries[rel]; !ok {
				e := imagetest.Dir(rel+"/", int64(fi.Mode().Perm()))
				e.Header.ModTime = mtime
				b.put(e)
			}
		case fi.Mode().IsRegular() && i == len(parts)-1:
			if _, ok := b.entries[rel]; ok {
				return nil
			}
			body, err := os.ReadFile(next)
			if err != nil {
				return err
			}
			e := imagetest.Entry{Header: tar.Header{Name: rel, Typeflag: tar.TypeReg, Mode: int64(fi.Mode().Perm()),
				ModTime: mtime, Format: tar.FormatPAX}, Body: body}
			b.put(e)
		default:
			return fmt.Errorf("%s: not a directory, symlink or regular file", next)
		}
		cur = next
	}
	return nil
}

func (b *rootfsBuilder) put(e imagetest.Entry) {
	b.entries[strings.TrimSuffix(e.Header.Name, "/")] = e
}

// image is the one-layer image of the entries (sorted, so parents come
// first and the bytes are the same on every build of this host).
func (b *rootfsBuilder) image(t *testing.T) gcr.Image {
	t.Helper()
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range b.entries {
			if !yield(k) {
				return
			}
		}
	})
	es := make([]imagetest.Entry, 0, len(keys))
	for _, k := range keys {
		es = append(es, b.entries[k])
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(imagetest.LayerTar(t, es...)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = gcr.Time{Time: imagetest.Epoch}
	for i := range cf.History {
		cf.History[i].Created = gcr.Time{Time: imagetest.Epoch}
	}
	cf.Config.User = "app"
	cf.Config.WorkingDir = "/home/app"
	cf.Config.Cmd = []string{"python3", "/app/server.py"}
	cf.Config.Env = []string{imagetest.DefaultPath, "LANG=C.UTF-8", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"}
	cf.Config.ExposedPorts = map[string]struct{}{"8080/tcp": {}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}
