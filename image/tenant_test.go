package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image/imagetest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

var (
	ownerA = Owner{Tenant: "acme", Quota: 1 << 30}
	ownerB = Owner{Tenant: "rival", Quota: 1 << 30}
)

func importAs(t *testing.T, s Store, owner Owner, path string) ([]Image, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return s.Import(t.Context(), owner, f)
}

// TestLayerTheft: tenant B names tenant A's private layer in a manifest
// without carrying it. The import is refused exactly as for a layer nobody
// has, B owns nothing of A's, and B may still import the same layer when it
// brings the bytes.
func TestLayerTheft(t *testing.T) {
	s := newStore(t)
	secret := imagetest.WithLayer(imagetest.File("secret.txt", 0o600, "acme's private key\n"))
	imgA := imagetest.BusyboxImage(t, secret)
	if _, err := importAs(t, s, ownerA, imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "a.tar"),
		imagetest.LayoutEntry{Image: imgA, Annotations: imagetest.RefAnnotations("cube.test/acme/app:v1")})); err != nil {
		t.Fatalf("Import(A's image) = %v", err)
	}

	// The theft: A's image, less A's secret layer (layer 2).
	_, theft := importAs(t, s, ownerB, imagetest.WriteOCIArchiveWithout(t, imgA, "cube.test/rival/x:v1", 2))
	// The control: the same shape with a layer digest nobody has.
	random := make([]byte, 32)
	rand.Read(random)
	imgR := imagetest.BusyboxImage(t, imagetest.WithLayer(imagetest.File("secret.txt", 0o600, hex.EncodeToString(random))))
	_, unknown := importAs(t, s, ownerB, imagetest.WriteOCIArchiveWithout(t, imgR, "cube.test/rival/x:v1", 2))

	wantErr(t, "Import(A's layer without its bytes)", theft, ErrInvalidArchive, "not in the archive")
	wantErr(t, "Import(unknown layer)", unknown, ErrInvalidArchive, "not in the archive")
	if theft.Error() != unknown.Error() {
		t.Errorf("an existing layer and an unknown one are refused differently:\n  %q\n  %q", theft, unknown)
	}
	digestA := imagetest.Digest(t, imgA)
	if s.ownsImage(ownerB, mustHash(t, digestA)) {
		t.Errorf("B owns A's image after a refused import")
	}
	m, _ := imgA.Manifest()
	if _, owned, _ := s.ownedBlobOf(ownerB, m.Layers[1].Digest); owned {
		t.Errorf("B owns A's secret layer after a refused import")
	}
	if n, _ := s.Usage(t.Context(), ownerB.Tenant); n != 0 {
		t.Errorf("Usage(B) = %d after refused imports; want 0", n)
	}

	// Bringing the bytes works, and is counted for B in full as for A.
	got, err := importAs(t, s, ownerB, imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "b.tar"),
		imagetest.LayoutEntry{Image: imgA, Annotations: imagetest.RefAnnotations("cube.test/rival/copy:v1")}))
	if err != nil || len(got) != 1 || got[0].Digest != digestA || got[0].Ref != "cube.test/rival/copy:v1" {
		t.Fatalf("Import(A's image with its bytes, as B) = %+v, %v; want %s named cube.test/rival/copy:v1", got, err, digestA)
	}
	ua, _ := s.Usage(t.Context(), ownerA.Tenant)
	ub, _ := s.Usage(t.Context(), ownerB.Tenant)
	if ua == 0 || ua != ub {
		t.Errorf("Usage(A) = %d, Usage(B) = %d; want the same shared image counted in full for each", ua, ub)
	}
	// And B can now name A's layer without carrying it: B owns it.
	if _, err := importAs(t, s, ownerB, imagetest.WriteOCIArchiveWithout(t, imgA, "cube.test/rival/again:v1", 2)); err != nil {
		t.Errorf("Import(a layer B owns, without its bytes) = %v; want it stored", err)
	}
}

// TestPullTheft: a pull of a manifest naming a layer the tenant does not
// own downloads that layer even when the store has it, so a registry that
// does not serve it fails the pull.
func TestPullTheft(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	s := newStore(t)
	img := imagetest.BusyboxImage(t, imagetest.WithLayer(imagetest.File("secret.txt", 0o600, "acme\n")))
	if _, err := importAs(t, s, ownerA, imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "a.tar"), imagetest.LayoutEntry{Image: img})); err != nil {
		t.Fatal(err)
	}
	imagetest.Push(t, img, reg+"/rival/steal:v1")
	m, _ := img.Manifest()
	// B's registry serves the manifest and config, but not the secret
	// layer's blob.
	hidden := m.Layers[1].Digest.String()
	target, _ := url.Parse("http://" + reg)
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/blobs/"+hidden) {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer front.Close()
	ref := strings.TrimPrefix(front.URL, "http://") + "/rival/steal:v1"

	var progress bytes.Buffer
	_, err := s.Pull(t.Context(), ownerB, ref, PullOptions{Progress: &progress, Insecure: true})
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), m.Layers[1].Digest.String()) {
		t.Fatalf("Pull(manifest naming A's layer, blob absent from the registry) = %v; want the layer's 404", err)
	}
	if strings.Contains(progress.String(), "already have") {
		t.Errorf("pull progress for B = %q; it must not reveal layers other tenants stored", progress.String())
	}
	if s.ownsImage(ownerB, mustHash(t, imagetest.Digest(t, img))) {
		t.Errorf("B owns A's image after a refused pull")
	}
	assertNoDebris(t, s)
	// Positive control: the full registry serves B the image.
	if _, err := s.Pull(t.Context(), ownerB, reg+"/rival/steal:v1", PullOptions{}); err != nil {
		t.Errorf("Pull(from the full registry) = %v; want it stored", err)
	}
}

// TestDiffIDMismatch: a layer whose uncompressed content is not the
// config's rootfs.diff_ids entry is refused, and nothing is stored.
func TestDiffIDMismatch(t *testing.T) {
	img := imagetest.BusyboxImage(t, imagetest.WithLayer(imagetest.File("a", 0o644, "a")))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[1] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	bad, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	_, err = importAs(t, s, ownerA, imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "bad.tar"), imagetest.LayoutEntry{Image: bad}))
	wantErr(t, "Import(wrong DiffID)", err, ErrInvalidArchive, "rootfs.diff_ids[1]", "corrupt or tampered")
	if l, _ := s.List(t.Context()); len(l) != 0 {
		t.Errorf("List() = %+v after a refused import; want nothing", l)
	}
	if n, _ := s.Usage(t.Context(), ownerA.Tenant); n != 0 {
		t.Errorf("Usage() = %d after a refused import; want 0", n)
	}
	assertNoDebris(t, s)
}

// TestUnnamedImportKeepsNoName: an unnamed import of an image another
// tenant named returns the digest, not that tenant's name.
func TestUnnamedImportKeepsNoName(t *testing.T) {
	s := newStore(t)
	img := imagetest.BusyboxImage(t)
	if _, err := importAs(t, s, ownerA, imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "a.tar"),
		imagetest.LayoutEntry{Image: img, Annotations: imagetest.RefAnnotations("cube.test/acme/secret-project:v1")})); err != nil {
		t.Fatal(err)
	}
	got, err := importAs(t, s, ownerB, imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "b.tar"), imagetest.LayoutEntry{Image: img}))
	digest := imagetest.Digest(t, img)
	if err != nil || len(got) != 1 || got[0].Ref != digest {
		t.Errorf("unnamed Import() by B = %+v, %v; want Ref %s", got, err, digest)
	}
	if g, err := s.Get(t.Context(), digest); err != nil || strings.Contains(fmt.Sprint(g), "secret-project") {
		t.Errorf("Get() = %+v, %v; want no tenant's name in the store", g, err)
	}
}

// gzipBomb returns a gzip stream of a tar holding one file of size zero
// bytes, made of repeated gzip members so that it stays small.
func gzipBomb(t *testing.T, name string, size int64) []byte {
	t.Helper()
	return gzipBombOf(t, tar.TypeReg, name, size)
}

// gzipBombOf is gzipBomb with an entry of type typ (a directory whose
// header claims size bytes of data, say).
func gzipBombOf(t *testing.T, typ byte, name string, size int64) []byte {
	t.Helper()
	var out bytes.Buffer
	member := func(b []byte) {
		zw, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
		zw.Write(b)
		zw.Close()
	}
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	h := hdr.Bytes()[:512]
	if typ != tar.TypeReg {
		// Retype the header and fix its checksum: tar.Writer will not
		// give a directory data, but a hostile layer may.
		h[156] = typ
		copy(h[148:156], "        ")
		var sum int64
		for _, c := range h {
			sum += int64(c)
		}
		copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	}
	member(h)
	const chunk = 16 << 20
	var zeros bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zeros, gzip.BestCompression)
	zw.Write(make([]byte, chunk))
	zw.Close()
	for n := int64(0); n < size; n += chunk {
		out.Write(zeros.Bytes())
	}
	member(make([]byte, 1024)) // end of archive
	return out.Bytes()
}

// writeLayout writes an OCI layout tar by hand: one image with the given
// compressed layers and DiffIDs (which are not checked before the quota
// bites).
func writeLayout(t *testing.T, layers [][]byte) string {
	t.Helper()
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs", "sha256")
	os.MkdirAll(blobs, 0o755)
	put := func(b []byte) v1.Hash {
		sum := sha256.Sum256(b)
		h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
		if err := os.WriteFile(filepath.Join(blobs, h.Hex), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return h
	}
	cf := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}}
	m := v1.Manifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.manifest.v1+json"}
	for _, l := range layers {
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)})
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Size: int64(len(l)), Digest: put(l)})
	}
	cb, _ := json.Marshal(cf)
	m.Config = v1.Descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Size: int64(len(cb)), Digest: put(cb)}
	mb, _ := json.Marshal(m)
	md := put(mb)
	idx, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{{MediaType: m.MediaType, Size: int64(len(mb)), Digest: md}}})
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	out := filepath.Join(t.TempDir(), "bomb.tar")
	imagetest.TarDir(t, dir, out)
	return out
}

// assertNoDebris checks a refused operation left nothing in tmp and no
// blob outside what images reference.
func assertNoDebris(t *testing.T, s *localStore) {
	t.Helper()
	if ents, _ := os.ReadDir(s.tmpDir); len(ents) != 0 {
		t.Errorf("tmp holds %d entries after a refused import", len(ents))
	}
	imgs, _ := s.List(t.Context())
	want := 0
	for _, img := range imgs {
		raw, _ := os.ReadFile(s.blobPath(mustHash(t, img.Digest)))
		m, _ := v1.ParseManifest(bytes.NewReader(raw))
		want += 2 + len(m.Layers)
	}
	if ents, _ := os.ReadDir(s.blobDir); len(ents) > want {
		t.Errorf("blob store holds %d blobs, more than the %d its images use: a refused import left some", len(ents), want)
	}
}

// TestQuotaBomb: a 4 GiB layer compressed to a few MB stops at the
// tenant's 64 MiB quota while it is decompressed, and leaves nothing.
func TestQuotaBomb(t *testing.T) {
	s := newStore(t)
	small := Owner{Tenant: "small", Quota: 64 << 20}
	bomb := gzipBomb(t, "zeros", 4<<30)
	if len(bomb) > 8<<20 {
		t.Fatalf("the bomb is %d bytes; want a small one", len(bomb))
	}
	_, err := importAs(t, s, small, writeLayout(t, [][]byte{bomb}))
	wantErr(t, "Import(gzip bomb)", err, ErrStorageQuota, "small", "64.0 MiB")
	wantErr(t, "Import(gzip bomb)", err, errdefs.ErrQuotaExceeded)
	if n, _ := s.Usage(t.Context(), small.Tenant); n != 0 {
		t.Errorf("Usage() = %d after the refused bomb; want 0", n)
	}
	assertNoDebris(t, s)

	// Positive control: the same tenant imports a normal image.
	if _, err := importAs(t, s, small, imagetest.BuildBusybox(t, "")); err != nil {
		t.Errorf("Import(busybox) under a 64 MiB quota = %v; want it stored", err)
	}
	if n, _ := s.Usage(t.Context(), small.Tenant); n == 0 || n > small.Quota {
		t.Errorf("Usage() = %d after busybox; want between 1 and the quota", n)
	}
}

// TestQuotaArchive: the import archive itself (here a gzip-compressed tar
// that extracts to 4 GiB) counts while it is extracted.
func TestQuotaArchive(t *testing.T) {
	s := newStore(t)
	small := Owner{Tenant: "small", Quota: 32 << 20}
	_, err := s.Import(t.Context(), small, bytes.NewReader(gzipBomb(t, "blobs/sha256/x", 4<<30)))
	wantErr(t, "Import(archive bomb)", err, ErrStorageQuota)
	assertNoDebris(t, s)
}

// TestQuotaFull: once a tenant holds its quota, the next image is refused
// before anything is stored; another tenant is unaffected.
func TestQuotaFull(t *testing.T) {
	s := newStore(t)
	p := imagetest.BuildBusybox(t, "")
	probe := Owner{Tenant: "probe"}
	if _, err := importAs(t, s, probe, p); err != nil {
		t.Fatal(err)
	}
	need, _ := s.Usage(t.Context(), probe.Tenant)
	// The slack is for the archive's own files while it is extracted.
	tight := Owner{Tenant: "tight", Quota: need + 64<<10}
	if _, err := importAs(t, s, tight, p); err != nil {
		t.Fatalf("Import() within the quota = %v", err)
	}
	noise := make([]byte, 256<<10)
	rand.Read(noise)
	_, err := importAs(t, s, tight, imagetest.BuildBusybox(t, "", imagetest.WithLayer(imagetest.File("more", 0o644, string(noise)))))
	wantErr(t, "Import(over the quota)", err, ErrStorageQuota)
	if n, _ := s.Usage(t.Context(), tight.Tenant); n != need {
		t.Errorf("Usage() = %d after a refused import; want %d", n, need)
	}
	assertNoDebris(t, s)
	if !errors.Is(err, errdefs.ErrQuotaExceeded) {
		t.Errorf("err = %v; want errdefs.ErrQuotaExceeded", err)
	}
}

// rawImage is the config and manifest of a linux/amd64 image of the given
// compressed layers (DiffIDs left as zeros: the quota bites first).
func rawImage(t *testing.T, layers [][]byte) (config, manifest []byte) {
	t.Helper()
	digest := func(b []byte) v1.Hash {
		sum := sha256.Sum256(b)
		return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	}
	cf := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}}
	m := v1.Manifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.manifest.v1+json"}
	for _, l := range layers {
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)})
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Size: int64(len(l)), Digest: digest(l)})
	}
	config, _ = json.Marshal(cf)
	m.Config = v1.Descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Size: int64(len(config)), Digest: digest(config)}
	manifest, _ = json.Marshal(m)
	return config, manifest
}

// pushRaw uploads blobs and a manifest to the registry with the plain
// distribution API (monolithic uploads).
func pushRaw(t *testing.T, reg, repo, tag string, manifest []byte, blobs ...[]byte) {
	t.Helper()
	for _, b := range blobs {
		sum := sha256.Sum256(b)
		resp, err := http.Post(fmt.Sprintf("http://%s/v2/%s/blobs/uploads/", reg, repo), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("start upload: %d %v", resp.StatusCode, err)
		}
		q := loc.Query()
		q.Set("digest", "sha256:"+hex.EncodeToString(sum[:]))
		loc.RawQuery = q.Encode()
		req, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("upload blob: HTTP %d", resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("http://%s/v2/%s/manifests/%s", reg, repo, tag), bytes.NewReader(manifest))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest: HTTP %d", resp.StatusCode)
	}
}

// TestQuotaBombPull: a pulled gzip bomb stops at the quota while it is
// decompressed and leaves nothing, like an imported one.
func TestQuotaBombPull(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	bomb := gzipBomb(t, "zeros", 1<<30)
	config, manifest := rawImage(t, [][]byte{bomb})
	pushRaw(t, reg, "rival/bomb", "v1", manifest, bomb, config)

	s := newStore(t)
	small := Owner{Tenant: "small", Quota: 64 << 20}
	_, err := s.Pull(t.Context(), small, reg+"/rival/bomb:v1", PullOptions{})
	wantErr(t, "Pull(gzip bomb)", err, ErrStorageQuota, "64.0 MiB")
	if n, _ := s.Usage(t.Context(), small.Tenant); n != 0 {
		t.Errorf("Usage() = %d after the refused bomb; want 0", n)
	}
	assertNoDebris(t, s)
	if ents, _ := os.ReadDir(s.blobDir); len(ents) != 0 {
		t.Errorf("the blob store holds %d blobs after the refused pull; want none", len(ents))
	}
}

// BenchmarkTheftRefusal measures the refusal of a manifest naming a layer
// the tenant does not carry: another tenant's private layer against one
// nobody has. The two should not be told apart by time.
//
//	go test -run '^$' -bench TheftRefusal -count 5 ./image
func BenchmarkTheftRefusal(b *testing.B) {
	s := openStoreB(b)
	secret := imagetest.BusyboxImage(b, imagetest.WithLayer(imagetest.File("secret.txt", 0o600, "acme\n")))
	p := imagetest.WriteOCIArchive(b, filepath.Join(b.TempDir(), "a.tar"), imagetest.LayoutEntry{Image: secret})
	f, _ := os.Open(p)
	if _, err := s.Import(b.Context(), ownerA, f); err != nil {
		b.Fatal(err)
	}
	f.Close()
	unknown := imagetest.BusyboxImage(b, imagetest.WithLayer(imagetest.File("secret.txt", 0o600, "nobody\n")))
	for _, c := range []struct {
		name string
		img  v1.Image
	}{{"existing", secret}, {"unknown", unknown}} {
		archive, err := os.ReadFile(imagetest.WriteOCIArchiveWithout(b, c.img, "", 2))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Import(b.Context(), ownerB, bytes.NewReader(archive)); err == nil {
					b.Fatal("import succeeded")
				}
			}
		})
	}
}

func openStoreB(b *testing.B) *localStore {
	st, err := NewLocalStoreWithOptions(b.TempDir(), nil, DefaultOptions())
	if err != nil {
		b.Fatal(err)
	}
	return st.(*localStore)
}

// TestQuotaMultiImage: an archive of two images fits a quota that its
// final usage fits: the first image, once stored, is not also counted as
// reserved while the second one is admitted.
func TestQuotaMultiImage(t *testing.T) {
	noise := func() string {
		b := make([]byte, 512<<10)
		rand.Read(b)
		return string(b)
	}
	one := imagetest.BusyboxImage(t, imagetest.WithLayer(imagetest.File("one", 0o644, noise())))
	two := imagetest.BusyboxImage(t, imagetest.WithLayer(imagetest.File("two", 0o644, noise())))
	p := imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "two.tar"), imagetest.LayoutEntry{Image: one}, imagetest.LayoutEntry{Image: two})
	s := newStore(t)
	probe := Owner{Tenant: "probe"}
	if _, err := importAs(t, s, probe, p); err != nil {
		t.Fatal(err)
	}
	need, _ := s.Usage(t.Context(), probe.Tenant)
	// The slack covers the archive's own small files (index.json,
	// manifests, configs) while it is extracted.
	fit := Owner{Tenant: "fit", Quota: need + 64<<10}
	if imgs, err := importAs(t, s, fit, p); err != nil || len(imgs) != 2 {
		t.Errorf("Import(two images) under a quota its usage fits = %d images, %v; want both", len(imgs), err)
	}
	if n, _ := s.Usage(t.Context(), fit.Tenant); n != need {
		t.Errorf("Usage() = %d; want %d as for the probe", n, need)
	}
}

// TestQuotaCountsEntries: a layer of many empty files is small in bytes
// but takes a host inode per file; each entry is charged, so a tenant
// within its quota cannot run the node out of inodes.
func TestQuotaCountsEntries(t *testing.T) {
	var files []imagetest.Entry
	for i := range 2000 {
		files = append(files, imagetest.File(fmt.Sprintf("many/f%05d", i), 0o644, ""))
	}
	img := imagetest.BusyboxImage(t, imagetest.WithLayer(files...))
	path := imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "many.tar"), imagetest.LayoutEntry{Image: img})
	s := newStore(t)
	// 2000 empty files are about 1 MiB of tar but cost 2000 inodes: a
	// 16 MiB quota holds the bytes, not the inodes.
	small := Owner{Tenant: "small", Quota: 16 << 20}
	if _, err := importAs(t, s, small, path); !errors.Is(err, ErrStorageQuota) {
		t.Fatalf("import of 2000 empty files under a 16 MiB quota: %v; want ErrStorageQuota", err)
	}
	if used, _ := s.Usage(t.Context(), small.Tenant); used != 0 {
		t.Errorf("usage after the refused import = %d; want 0", used)
	}
	// With room for the inodes it is stored, and charged for them.
	big := Owner{Tenant: "big", Quota: 1 << 30}
	if _, err := importAs(t, s, big, path); err != nil {
		t.Fatal(err)
	}
	if used, _ := s.Usage(t.Context(), big.Tenant); used < 2000*layerEntryCharge {
		t.Errorf("usage of the image of 2000 files = %d; want at least %d (16 KiB per entry)", used, 2000*layerEntryCharge)
	}
}
