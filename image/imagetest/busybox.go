package imagetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is where Debian's busybox-static package installs busybox.
var BusyboxPath = "/bin/busybox"

// DefaultRef names built images unless WithRef says otherwise.
const DefaultRef = "cube.test/busybox:latest"

// DefaultPath is the PATH of built images.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Applets get a symlink in /bin. sh points at "/bin/busybox" (absolute, as
// in real images); the others at "busybox" (relative).
var Applets = []string{
	"sh", "ash", "cat", "chmod", "chown", "cp", "date", "dd", "df", "echo",
	"env", "false", "grep", "head", "hostname", "httpd", "id", "ip", "kill",
	"ln", "ls", "mkdir", "mount", "mv", "nc", "nslookup", "ping", "printf",
	"ps", "pwd", "rm", "sed", "sleep", "sort", "stat", "tail", "tee", "test",
	"top", "touch", "true", "umount", "uname", "wc", "wget", "whoami", "yes",
}

// Option changes a built image.
type Option func(*config)

type config struct {
	ref          string
	cmd          []string
	entrypoint   []string
	env          []string
	workingDir   string
	user         string
	exposedPorts []string
	arch         string
	layers       [][]Entry
}

// WithRef names the image: the ref annotations of an OCI archive, the
// RepoTag of a docker archive. "" leaves it unnamed. Default DefaultRef.
func WithRef(ref string) Option { return func(c *config) { c.ref = ref } }

// WithCmd sets the config's Cmd (default ["sh"]).
func WithCmd(cmd ...string) Option { return func(c *config) { c.cmd = cmd } }

// WithEntrypoint sets the config's Entrypoint (default none).
func WithEntrypoint(ep ...string) Option { return func(c *config) { c.entrypoint = ep } }

// WithEnv adds environment variables ("K=V") after PATH.
func WithEnv(env ...string) Option { return func(c *config) { c.env = append(c.env, env...) } }

// WithWorkingDir sets the config's WorkingDir.
func WithWorkingDir(dir string) Option { return func(c *config) { c.workingDir = dir } }

// WithUser sets the config's User.
func WithUser(user string) Option { return func(c *config) { c.user = user } }

// WithExposedPorts sets the config's ExposedPorts ("80/tcp").
func WithExposedPorts(ports ...string) Option {
	return func(c *config) { c.exposedPorts = ports }
}

// WithArchitecture sets the config's architecture (default amd64), to test
// platform checks.
func WithArchitecture(arch string) Option { return func(c *config) { c.arch = arch } }

// WithLayer adds a layer of entries on top of the busybox layer (and of
// earlier WithLayer layers).
func WithLayer(entries ...Entry) Option {
	return func(c *config) { c.layers = append(c.layers, entries) }
}

func newConfig(opts []Option) *config {
	c := &config{ref: DefaultRef, cmd: []string{"sh"}, arch: "amd64"}
	for _, o := range opts {
		o(c)
	}
	return c
}

var (
	busyboxOnce sync.Once
	busyboxData []byte
	busyboxErr  error
)

// Busybox returns the static busybox binary. It skips the test (fails it
// under CI) when busybox-static is not installed.
func Busybox(t testing.TB) []byte {
	t.Helper()
	busyboxOnce.Do(func() {
		f, err := elf.Open(BusyboxPath)
		if err != nil {
			busyboxErr = err
			return
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				busyboxErr = fmt.Errorf("%s is dynamically linked", BusyboxPath)
				return
			}
		}
		busyboxData, busyboxErr = os.ReadFile(BusyboxPath)
	})
	if busyboxErr != nil {
		Missing(t, fmt.Sprintf("no static busybox (%v); install it with `apt-get install busybox-static`", busyboxErr))
	}
	return busyboxData
}

// Missing skips the test because a tool is missing, or fails it under CI
// (CI=true), which must have every tool.
func Missing(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("imagetest: %s (CI must provide it)", reason)
	}
	t.Skipf("imagetest: %s", reason)
}

// BusyboxEntries is the busybox root filesystem: /bin/busybox with applet
// symlinks, /etc/passwd and /etc/group, /tmp (1777) and empty mount points.
func BusyboxEntries(t testing.TB) []Entry {
	t.Helper()
	return busyboxEntries(Busybox(t))
}

func busyboxEntries(busybox []byte) []Entry {
	es := []Entry{
		Dir("bin/", 0o755), Dir("dev/", 0o755), Dir("etc/", 0o755),
		Dir("home/", 0o755), Dir("proc/", 0o555), Dir("root/", 0o700),
		Dir("sys/", 0o555), Dir("tmp/", 0o1777), Dir("usr/", 0o755),
		Dir("usr/bin/", 0o755), Dir("var/", 0o755),
		{Header: header("bin/busybox", tar.TypeReg, 0o755), Body: busybox},
	}
	for _, a := range Applets {
		target := "busybox"
		if a == "sh" {
			target = "/bin/busybox"
		}
		es = append(es, Symlink("bin/"+a, target))
	}
	return append(es,
		File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"),
		File("etc/group", 0o644, "root:x:0:\nnobody:x:65534:\n"),
	)
}

var (
	busyboxLayerOnce sync.Once
	busyboxLayerVal  v1.Layer
	busyboxLayerErr  error
)

// busyboxLayer is the busybox layer, compressed once per process: images
// share it (a v1.Layer is immutable), which keeps builds cheap under -race.
func busyboxLayer(t testing.TB) v1.Layer {
	t.Helper()
	bb := Busybox(t) // skips without busybox, outside the Once
	busyboxLayerOnce.Do(func() {
		raw := LayerTar(t, busyboxEntries(bb)...)
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		if _, err := zw.Write(raw); err != nil {
			busyboxLayerErr = err
			return
		}
		if err := zw.Close(); err != nil {
			busyboxLayerErr = err
			return
		}
		b := gz.Bytes()
		busyboxLayerVal, busyboxLayerErr = tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(b)), nil
		}, tarball.WithMediaType(types.OCILayer))
	})
	if busyboxLayerErr != nil {
		t.Fatalf("imagetest: busybox layer: %v", busyboxLayerErr)
	}
	return busyboxLayerVal
}

// BusyboxImage builds the busybox image (plus WithLayer layers) as a
// go-containerregistry image, e.g. to Push it.
func BusyboxImage(t testing.TB, opts ...Option) v1.Image {
	t.Helper()
	c := newConfig(opts)
	layers := []v1.Layer{busyboxLayer(t)}
	for _, es := range c.layers {
		layers = append(layers, Layer(t, es...))
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatalf("imagetest: append layers: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("imagetest: config: %v", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", c.arch
	cf.Created = v1.Time{Time: Epoch}
	cf.Config.Cmd = c.cmd
	cf.Config.Entrypoint = c.entrypoint
	cf.Config.Env = append([]string{DefaultPath}, c.env...)
	cf.Config.WorkingDir = c.workingDir
	cf.Config.User = c.user
	cf.Config.ExposedPorts = nil
	for _, p := range c.exposedPorts {
		if cf.Config.ExposedPorts == nil {
			cf.Config.ExposedPorts = map[string]struct{}{}
		}
		cf.Config.ExposedPorts[p] = struct{}{}
	}
	for i := range cf.History {
		cf.History[i].Created = v1.Time{Time: Epoch}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatalf("imagetest: set config: %v", err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return img
}

// BuildBusybox writes the busybox image as an OCI image-layout tar in dir
// (t.TempDir() when dir is "") and returns the tar's path. The image is
// named by WithRef (default DefaultRef) through the annotations containerd
// and Docker write (RefAnnotations).
func BuildBusybox(t testing.TB, dir string, opts ...Option) string {
	t.Helper()
	c := newConfig(opts)
	return WriteOCIArchive(t, newArchivePath(t, dir, "busybox-*.oci.tar"),
		LayoutEntry{Image: BusyboxImage(t, opts...), Annotations: RefAnnotations(c.ref)})
}

// BuildDockerArchive writes the busybox image in `docker save` format
// (docker-archive: manifest.json with RepoTags) in dir (t.TempDir() when
// "") and returns the tar's path. The RepoTag is WithRef's (default
// DefaultRef); WithRef("") writes no RepoTag.
func BuildDockerArchive(t testing.TB, dir string, opts ...Option) string {
	t.Helper()
	c := newConfig(opts)
	var tags []string
	if c.ref != "" {
		tags = []string{c.ref}
	}
	return WriteDockerArchive(t, newArchivePath(t, dir, "busybox-*.docker.tar"), BusyboxImage(t, opts...), tags...)
}

func newArchivePath(t testing.TB, dir, pattern string) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		t.Fatalf("imagetest: %v", err)
	}
	f.Close()
	return f.Name()
}

// Digest returns img's manifest digest ("sha256:...").
func Digest(t testing.TB, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("imagetest: digest: %v", err)
	}
	return d.String()
}

// sortedFiles lists the regular files and directories under dir, sorted.
func sortedFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("imagetest: walk %s: %v", dir, err)
	}
	slices.Sort(out)
	return out
}
