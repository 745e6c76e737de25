package image

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cube-platform/cube/image/imagetest"
	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// TestWriteFuzzSeeds rewrites testdata/fuzz/*: small valid inputs and the
// known attacks, for the fuzzers to start from and for `go test` to run.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("CUBE_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set CUBE_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	write := func(fuzz, name string, args ...[]byte) {
		dir := filepath.Join("testdata", "fuzz", fuzz)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(a)))
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tiny := tinyImage(t, "amd64", imagetest.File("hello", 0o644, "hi\n"), imagetest.Symlink("link", "/hello"))
	arm := tinyImage(t, "arm64", imagetest.File("hello", 0o644, "arm\n"))
	tmp := t.TempDir()

	// Import: OCI layout, docker-archive, multi-platform, gzip, a missing
	// layer, hostile archive entries.
	write("FuzzImport", "oci-layout", read(imagetest.WriteOCIArchive(t, filepath.Join(tmp, "a.tar"),
		imagetest.LayoutEntry{Image: tiny, Annotations: imagetest.RefAnnotations("cube.test/tiny:v1")})))
	write("FuzzImport", "docker-archive", read(imagetest.WriteDockerArchive(t, filepath.Join(tmp, "d.tar"), tiny, "cube.test/tiny:v1")))
	write("FuzzImport", "multi-platform", read(imagetest.WriteOCIArchive(t, filepath.Join(tmp, "m.tar"),
		imagetest.LayoutEntry{Index: imagetest.Index(t, tiny, arm), Annotations: imagetest.RefAnnotations("cube.test/multi:v1")})))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(read(filepath.Join(tmp, "a.tar")))
	zw.Close()
	write("FuzzImport", "gzipped", gz.Bytes())
	write("FuzzImport", "missing-layer", read(imagetest.WriteOCIArchiveWithout(t, tiny, "cube.test/tiny:v1", 1)))
	F := imagetest.File
	write("FuzzImport", "traversal", read(imagetest.WriteTar(t, tmp, F("index.json", 0o644, "{}"), F("../escape", 0o644, "x"))))
	write("FuzzImport", "symlink-out", read(imagetest.WriteTar(t, tmp, imagetest.Symlink("index.json", "/etc/passwd"))))
	write("FuzzImport", "hardlink-out", read(imagetest.WriteTar(t, tmp, imagetest.Hardlink("index.json", "../../etc/passwd"))))
	write("FuzzImport", "device", read(imagetest.WriteTar(t, tmp, imagetest.CharDevice("index.json", 1, 3))))

	// Unpack: every known attack, whiteouts, links, FIFOs, gzip and zstd.
	const outside = "/tmp/cube-fuzz-outside"
	for _, kind := range imagetest.Attacks() {
		write("FuzzUnpackLayer", string(kind), imagetest.MaliciousLayerTar(t, kind, outside))
	}
	plain := imagetest.LayerTar(t,
		imagetest.Dir("etc/", 0o755), F("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n"),
		imagetest.Symlink("bin", "usr/bin"), imagetest.Hardlink("etc/passwd2", "etc/passwd"),
		imagetest.Fifo("run/fifo", 0o600), imagetest.Whiteout("old"), imagetest.Opaque("var"))
	write("FuzzUnpackLayer", "entries", plain)
	gz.Reset()
	zw = gzip.NewWriter(&gz)
	zw.Write(plain)
	zw.Close()
	write("FuzzUnpackLayer", "gzip", gz.Bytes())
	enc, _ := zstd.NewWriter(nil)
	write("FuzzUnpackLayer", "zstd", enc.EncodeAll(plain, nil))

	// Manifest and config.
	rm, _ := tiny.RawManifest()
	rc, _ := tiny.RawConfigFile()
	write("FuzzManifest", "oci", rm, rc)
	docker := mutate.ConfigMediaType(mutate.MediaType(tiny, types.DockerManifestSchema2), types.DockerConfigJSON)
	dm, _ := docker.RawManifest()
	dc, _ := docker.RawConfigFile()
	write("FuzzManifest", "docker", dm, dc)

	// Indexes: OCI, a Docker manifest list, attestations, nested.
	ri, _ := imagetest.Index(t, tiny, arm).RawManifest()
	write("FuzzIndex", "oci-index", ri)
	write("FuzzIndex", "docker-list", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[`+
		`{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":528,"digest":"sha256:`+fmt.Sprintf("%064x", 1)+`","platform":{"architecture":"amd64","os":"linux"}},`+
		`{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":528,"digest":"sha256:`+fmt.Sprintf("%064x", 2)+`","platform":{"architecture":"arm","os":"linux","variant":"v7"}}]}`))
	write("FuzzIndex", "attestation", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`+
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"sha256:`+fmt.Sprintf("%064x", 3)+`","platform":{"architecture":"unknown","os":"unknown"}}]}`))
	write("FuzzIndex", "nested", []byte(`{"schemaVersion":2,"manifests":[`+
		`{"mediaType":"application/vnd.oci.image.index.v1+json","size":1,"digest":"sha256:`+fmt.Sprintf("%064x", 4)+`","platform":{"architecture":"amd64","os":"linux"}}]}`))
}

// tinyImage is a one-layer linux image of entries.
func tinyImage(t *testing.T, arch string, entries ...imagetest.Entry) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, imagetest.Layer(t, entries...))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: imagetest.Epoch}
	for i := range cf.History {
		cf.History[i].Created = v1.Time{Time: imagetest.Epoch}
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
}
