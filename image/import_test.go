package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image/imagetest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// unpackedSize is the Image.Unpacked the store must report for img: the
// uncompressed layer bytes plus layerEntryCharge per file.
func unpackedSize(t *testing.T, img v1.Image) int64 {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		cr := &countingReader{r: rc, limit: 1 << 40}
		tr := tar.NewReader(cr)
		for {
			if _, err := tr.Next(); err != nil {
				break
			}
			n += layerEntryCharge
		}
		_, err = io.Copy(io.Discard, cr)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		n += cr.n
	}
	return n
}

// layerSize is the Image.Size the store must report for img.
func layerSize(t *testing.T, img v1.Image) int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

func TestImportOCILayout(t *testing.T) {
	opts := []imagetest.Option{
		imagetest.WithRef("cube.test/app:v1"),
		imagetest.WithEntrypoint("/bin/sh", "-c"),
		imagetest.WithCmd("echo hi"),
		imagetest.WithEnv("A=1"),
		imagetest.WithWorkingDir("/tmp"),
		imagetest.WithUser("nobody"),
		imagetest.WithExposedPorts("8080/tcp", "53/udp"),
	}
	img := imagetest.BusyboxImage(t, opts...)
	s := newStore(t)
	got := importFile(t, s, imagetest.BuildBusybox(t, "", opts...))
	want := []Image{{
		Ref:     "cube.test/app:v1",
		Digest:  imagetest.Digest(t, img),
		Size:    layerSize(t, img),
		Created: imagetest.Epoch,
		Config: Config{
			Entrypoint:   []string{"/bin/sh", "-c"},
			Cmd:          []string{"echo hi"},
			Env:          []string{imagetest.DefaultPath, "A=1"},
			WorkingDir:   "/tmp",
			User:         "nobody",
			ExposedPorts: []string{"53/udp", "8080/tcp"},
		},
		Unpacked: unpackedSize(t, img),
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Import() = %+v; want %+v", got, want)
	}
	ctx := t.Context()
	// The store keeps no names (they are the tenants'): Get and List give
	// the digest as Ref.
	unnamed := want[0]
	unnamed.Ref = unnamed.Digest
	if g, err := s.Get(ctx, want[0].Digest); err != nil || !reflect.DeepEqual(g, unnamed) {
		t.Errorf("Get(%s) = %+v, %v; want %+v", want[0].Digest, g, err, unnamed)
	}
	if l, err := s.List(ctx); err != nil || !reflect.DeepEqual(l, []Image{unnamed}) {
		t.Errorf("List() = %+v, %v; want %+v", l, err, unnamed)
	}
	// The store is itself an OCI layout that ggcr (and skopeo) can read.
	stored, err := layout.Path(s.ociDir).Image(mustHash(t, want[0].Digest))
	if err != nil {
		t.Fatalf("read stored image back with ggcr: %v", err)
	}
	if d := imagetest.Digest(t, stored); d != want[0].Digest {
		t.Errorf("stored image digest = %s; want %s", d, want[0].Digest)
	}
}

func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestImportOCINames(t *testing.T) {
	img := imagetest.BusyboxImage(t)
	digest := imagetest.Digest(t, img)
	tests := []struct {
		name string
		ann  map[string]string
		want string
	}{
		{"containerd and tag", imagetest.RefAnnotations("cube.test/app:v1"), "cube.test/app:v1"},
		{"ref.name full", map[string]string{AnnotationRefName: "cube.test/app:v2"}, "cube.test/app:v2"},
		{"ref.name docker hub", map[string]string{AnnotationRefName: "busybox:1.0"}, "docker.io/library/busybox:1.0"},
		{"ref.name bare tag", map[string]string{AnnotationRefName: "v1"}, digest},
		{"none", nil, digest},
		{"bad containerd name", map[string]string{AnnotationContainerdName: "UP::x", AnnotationRefName: "cube.test/ok:v3"}, "cube.test/ok:v3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			p := imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "img.tar"),
				imagetest.LayoutEntry{Image: img, Annotations: tt.ann})
			got := importFile(t, s, p)
			if len(got) != 1 || got[0].Ref != tt.want || got[0].Digest != digest {
				t.Errorf("Import() = %+v; want one image %s named %q", got, digest, tt.want)
			}
		})
	}
}

func TestImportTwoNames(t *testing.T) {
	img := imagetest.BusyboxImage(t)
	s := newStore(t)
	p := imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "img.tar"),
		imagetest.LayoutEntry{Image: img, Annotations: imagetest.RefAnnotations("cube.test/a:v1")},
		imagetest.LayoutEntry{Image: img, Annotations: imagetest.RefAnnotations("cube.test/b:v1")},
		imagetest.LayoutEntry{Image: img}, // unnamed: the digest, never an earlier name
	)
	got := importFile(t, s, p)
	var refs []string
	for _, g := range got {
		refs = append(refs, g.Ref)
	}
	digest := imagetest.Digest(t, img)
	if want := []string{"cube.test/a:v1", "cube.test/b:v1", digest}; !reflect.DeepEqual(refs, want) {
		t.Errorf("Import() refs = %q; want %q", refs, want)
	}
	// The store keeps no names: they belong to the tenants' records.
	l, err := s.List(t.Context())
	if err != nil || len(l) != 1 || l[0].Ref != digest {
		t.Errorf("List() = %+v, %v; want one image named by its digest %s", l, err, digest)
	}
}

func TestImportDockerArchive(t *testing.T) {
	tests := []struct {
		name    string
		ref     string
		wantRef string // "" means the digest
	}{
		{"tagged", "cube.test/app:v2", "cube.test/app:v2"},
		{"docker hub tag", "busybox:1.36", "docker.io/library/busybox:1.36"},
		{"untagged", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			got := importFile(t, s, imagetest.BuildDockerArchive(t, "", imagetest.WithRef(tt.ref), imagetest.WithCmd("sleep", "1")))
			if len(got) != 1 {
				t.Fatalf("Import() = %+v; want one image", got)
			}
			want := tt.wantRef
			if want == "" {
				want = got[0].Digest
			}
			if got[0].Ref != want || !reflect.DeepEqual(got[0].Config.Cmd, []string{"sleep", "1"}) {
				t.Errorf("Import() = %+v; want Ref %q and Cmd [sleep 1]", got[0], want)
			}
			root, err := s.RootFS(t.Context(), got[0].Digest)
			if err != nil {
				t.Fatalf("RootFS() = %v", err)
			}
			if fi, err := os.Stat(filepath.Join(root, "bin/busybox")); err != nil || fi.Mode()&0o111 == 0 {
				t.Errorf("bin/busybox in %s: %v, %v; want an executable", root, fi, err)
			}
		})
	}
}

func TestImportGzipped(t *testing.T) {
	raw, err := os.ReadFile(imagetest.BuildDockerArchive(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	imgs, err := newStore(t).Import(t.Context(), testOwner, &buf)
	if err != nil || len(imgs) != 1 || imgs[0].Ref != imagetest.DefaultRef {
		t.Errorf("Import(gzipped docker-archive) = %+v, %v; want %s", imgs, err, imagetest.DefaultRef)
	}
}

func TestImportIdempotent(t *testing.T) {
	for _, format := range []string{"oci", "docker"} {
		t.Run(format, func(t *testing.T) {
			build := imagetest.BuildBusybox
			if format == "docker" {
				build = imagetest.BuildDockerArchive
			}
			s := newStore(t)
			p := build(t, "")
			first := importFile(t, s, p)
			second := importFile(t, s, p)
			if !reflect.DeepEqual(first, second) {
				t.Errorf("re-Import() = %+v; want %+v as the first time", second, first)
			}
			if l, err := s.List(t.Context()); err != nil || len(l) != 1 {
				t.Errorf("List() = %+v, %v; want one image", l, err)
			}
			idx, err := s.readIndex()
			if err != nil || len(idx.Manifests) != 1 {
				t.Errorf("index.json = %+v, %v; want one manifest", idx, err)
			}
			if ents, _ := os.ReadDir(s.tmpDir); len(ents) != 0 {
				t.Errorf("tmp holds %d entries after import; want none", len(ents))
			}
		})
	}
}

func TestImportPlatforms(t *testing.T) {
	amd := imagetest.BusyboxImage(t)
	arm := imagetest.BusyboxImage(t, imagetest.WithArchitecture("arm64"))
	dir := t.TempDir()
	t.Run("index picks amd64", func(t *testing.T) {
		p := imagetest.WriteOCIArchive(t, filepath.Join(dir, "multi.tar"), imagetest.LayoutEntry{
			Index: imagetest.Index(t, arm, amd), Annotations: imagetest.RefAnnotations("cube.test/multi:v1"),
		})
		got := importFile(t, newStore(t), p)
		if len(got) != 1 || got[0].Digest != imagetest.Digest(t, amd) || got[0].Ref != "cube.test/multi:v1" {
			t.Errorf("Import() = %+v; want the amd64 image %s", got, imagetest.Digest(t, amd))
		}
	})
	t.Run("flat layout skips arm64", func(t *testing.T) {
		p := imagetest.WriteOCIArchive(t, filepath.Join(dir, "flat.tar"),
			imagetest.LayoutEntry{Image: arm, Annotations: imagetest.RefAnnotations("cube.test/arm:v1")},
			imagetest.LayoutEntry{Image: amd, Annotations: imagetest.RefAnnotations("cube.test/amd:v1")})
		got := importFile(t, newStore(t), p)
		if len(got) != 1 || got[0].Ref != "cube.test/amd:v1" {
			t.Errorf("Import() = %+v; want only cube.test/amd:v1", got)
		}
	})
	t.Run("arm64 only", func(t *testing.T) {
		p := imagetest.WriteOCIArchive(t, filepath.Join(dir, "arm.tar"), imagetest.LayoutEntry{Index: imagetest.Index(t, arm)})
		_, err := importPath(t, newStore(t), p)
		wantErr(t, "Import(arm64 only)", err, ErrInvalidArchive, "no linux/amd64 image", "linux/arm64")
	})
	t.Run("docker-archive arm64", func(t *testing.T) {
		p := imagetest.BuildDockerArchive(t, "", imagetest.WithArchitecture("arm64"))
		_, err := importPath(t, newStore(t), p)
		wantErr(t, "Import(arm64 docker-archive)", err, ErrInvalidArchive, "no linux/amd64 image")
	})
}

func TestImportInvalidArchive(t *testing.T) {
	sentinel := imagetest.PlantSentinel(t)
	up := strings.Repeat("../", 40)
	outside := up + strings.TrimPrefix(sentinel.File, "/")
	img := imagetest.BusyboxImage(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tampered := func(edit func(t *testing.T, layoutDir string, img v1.Image)) string {
		ld := t.TempDir()
		p, err := layout.Write(ld, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.AppendImage(img); err != nil {
			t.Fatal(err)
		}
		edit(t, ld, img)
		out := filepath.Join(t.TempDir(), "tampered.tar")
		imagetest.TarDir(t, ld, out)
		return out
	}
	firstLayer := func(t *testing.T, ld string, img v1.Image) string {
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		d, err := ls[0].Digest()
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Join(ld, "blobs", d.Algorithm, d.Hex)
	}
	tests := []struct {
		name string
		path string
		want []string
	}{
		{"random bytes", write("random", bytes.Repeat([]byte("not a tar "), 100)), []string{"not a readable tar archive"}},
		{"empty", write("empty", nil), []string{"the archive is empty"}},
		{"neither format", imagetest.WriteTar(t, "", imagetest.File("hello.txt", 0o644, "hi")),
			[]string{"neither index.json", "manifest.json"}},
		{"path traversal", imagetest.WriteTar(t, "", imagetest.File(outside, 0o644, imagetest.Payload)),
			[]string{`"..`, "escape"}},
		{"absolute path", imagetest.WriteTar(t, "", imagetest.File(sentinel.File, 0o644, imagetest.Payload)),
			[]string{"absolute"}},
		{"absolute symlink", imagetest.WriteTar(t, "", imagetest.Symlink("index.json", sentinel.File)),
			[]string{"symlink", sentinel.File}},
		{"escaping symlink", imagetest.WriteTar(t, "", imagetest.Symlink("index.json", "../../etc/passwd")),
			[]string{"outside the archive"}},
		{"escaping hard link", imagetest.WriteTar(t, "", imagetest.Hardlink("index.json", outside)),
			[]string{"outside the archive"}},
		{"dangling link", imagetest.WriteTar(t, "", imagetest.Symlink("index.json", "nothing")),
			[]string{"not a file in the archive"}},
		{"device", imagetest.WriteTar(t, "", imagetest.CharDevice("index.json", 1, 1)),
			[]string{"only files and directories"}},
		{"bad index.json", imagetest.WriteTar(t, "", imagetest.File("index.json", 0o644, "{")),
			[]string{"index.json"}},
		{"bad RepoTag", imagetest.WriteTar(t, "", imagetest.File("manifest.json", 0o644, `[{"Config":"c.json","RepoTags":["UP::x"],"Layers":[]}]`),
			imagetest.File("c.json", 0o644, `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)),
			[]string{"RepoTag"}},
		{"escaping config path", imagetest.WriteTar(t, "", imagetest.File("manifest.json", 0o644, `[{"Config":"../../etc/passwd","Layers":[]}]`)),
			[]string{"not a path inside the archive"}},
		{"tampered layer", tampered(func(t *testing.T, ld string, img v1.Image) {
			p := firstLayer(t, ld, img)
			os.Chmod(p, 0o644)
			if err := os.WriteFile(p, []byte("evil"), 0o644); err != nil {
				t.Fatal(err)
			}
		}), []string{"corrupt or tampered"}},
		{"missing layer", tampered(func(t *testing.T, ld string, img v1.Image) {
			if err := os.Remove(firstLayer(t, ld, img)); err != nil {
				t.Fatal(err)
			}
		}), []string{"layer 1 of image 1 is not in the archive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			imgs, err := importPath(t, s, tt.path)
			wantErr(t, "Import()", err, ErrInvalidArchive, tt.want...)
			wantErr(t, "Import()", err, errdefs.ErrInvalid)
			if len(imgs) != 0 {
				t.Errorf("Import() stored %+v; want nothing", imgs)
			}
			if l, _ := s.List(t.Context()); len(l) != 0 {
				t.Errorf("List() = %+v after a failed import; want nothing", l)
			}
			if ents, _ := os.ReadDir(s.tmpDir); len(ents) != 0 {
				t.Errorf("tmp holds %d entries after a failed import; want none", len(ents))
			}
			sentinel.Check(t)
		})
	}
}

func TestImportSizeLimit(t *testing.T) {
	s := newStore(t, func(o *Options) { o.MaxImageSize = 64 << 10 })
	_, err := importPath(t, s, imagetest.BuildBusybox(t, ""))
	wantErr(t, "Import(image over MaxImageSize)", err, ErrInvalidArchive, "image size limit")
}
