package imagetest

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotation keys that name an image in an OCI image layout's index.json.
const (
	AnnotationRefName        = "org.opencontainers.image.ref.name"
	AnnotationContainerdName = "io.containerd.image.name"
)

// RefAnnotations returns the index.json annotations containerd and Docker
// write for ref: the full name in io.containerd.image.name and the tag
// alone in org.opencontainers.image.ref.name. "" gives none.
func RefAnnotations(ref string) map[string]string {
	if ref == "" {
		return nil
	}
	ann := map[string]string{AnnotationContainerdName: ref}
	if tag, err := name.NewTag(ref); err == nil {
		ann[AnnotationRefName] = tag.TagStr()
	}
	return ann
}

// LayoutEntry is one index.json entry of an OCI image layout: an image or
// an index, with its annotations.
type LayoutEntry struct {
	Image       v1.Image
	Index       v1.ImageIndex
	Annotations map[string]string
}

// WriteOCIArchive writes an OCI image-layout tar holding entries to path
// and returns path.
func WriteOCIArchive(t testing.TB, path string, entries ...LayoutEntry) string {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatalf("imagetest: layout: %v", err)
	}
	for _, e := range entries {
		var opts []layout.Option
		if len(e.Annotations) > 0 {
			opts = append(opts, layout.WithAnnotations(e.Annotations))
		}
		switch {
		case e.Image != nil:
			err = p.AppendImage(e.Image, opts...)
		case e.Index != nil:
			err = p.AppendIndex(e.Index, opts...)
		}
		if err != nil {
			t.Fatalf("imagetest: write layout: %v", err)
		}
	}
	TarDir(t, dir, path)
	return path
}

// Index returns an OCI image index of imgs, each described with the
// platform of its config (a multi-platform image).
func Index(t testing.TB, imgs ...v1.Image) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatalf("imagetest: config: %v", err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
		}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
}

// WriteDockerArchive writes img in `docker save` format to path with the
// given RepoTags (none when tags is empty) and returns path.
func WriteDockerArchive(t testing.TB, path string, img v1.Image, tags ...string) string {
	t.Helper()
	refs := map[name.Reference]v1.Image{}
	for _, tag := range tags {
		r, err := name.NewTag(tag)
		if err != nil {
			t.Fatalf("imagetest: tag %q: %v", tag, err)
		}
		refs[r] = img
	}
	if len(tags) == 0 {
		r, err := name.NewDigest("cube.test/unnamed@" + Digest(t, img))
		if err != nil {
			t.Fatalf("imagetest: %v", err)
		}
		refs[r] = img
	}
	if err := tarball.MultiRefWriteToFile(path, refs); err != nil {
		t.Fatalf("imagetest: write docker archive: %v", err)
	}
	return path
}

// WriteTar writes entries as a plain tar file in dir (t.TempDir() when "")
// and returns its path: for hand-made, possibly broken, archives.
func WriteTar(t testing.TB, dir string, entries ...Entry) string {
	t.Helper()
	p := newArchivePath(t, dir, "archive-*.tar")
	if err := os.WriteFile(p, LayerTar(t, entries...), 0o644); err != nil {
		t.Fatalf("imagetest: %v", err)
	}
	return p
}

// TarDir writes the files and directories under dir to the tar file dst,
// reproducibly (sorted, fixed times and owners).
func TarDir(t testing.TB, dir, dst string) {
	t.Helper()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatalf("imagetest: %v", err)
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	for _, p := range sortedFiles(t, dir) {
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatalf("imagetest: %v", err)
		}
		switch {
		case fi.IsDir():
			err = tw.WriteHeader(&tar.Header{Name: rel + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: Epoch})
		case fi.Mode().IsRegular():
			err = tw.WriteHeader(&tar.Header{Name: rel, Typeflag: tar.TypeReg, Mode: 0o644, Size: fi.Size(), ModTime: Epoch})
			if err == nil {
				err = copyFile(tw, p)
			}
		default:
			t.Fatalf("imagetest: %s: not a file or directory", p)
		}
		if err != nil {
			t.Fatalf("imagetest: tar %s: %v", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("imagetest: %v", err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("imagetest: %v", err)
	}
}

func copyFile(w io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// WriteOCIArchiveWithout writes img, named ref, as an OCI layout tar
// less the blobs of the layers numbered drop (1-based): a manifest that
// names blobs it does not carry, as a tenant stealing another's layer
// would send it.
func WriteOCIArchiveWithout(t testing.TB, img v1.Image, ref string, drop ...int) string {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(RefAnnotations(ref))); err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range drop {
		if err := os.Remove(filepath.Join(dir, "blobs", "sha256", m.Layers[n-1].Digest.Hex)); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "partial.tar")
	TarDir(t, dir, out)
	return out
}
