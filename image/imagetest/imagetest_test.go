package imagetest

import (
	"bytes"
	"os"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestBuildsAreReproducible(t *testing.T) {
	for _, build := range []func(testing.TB, string, ...Option) string{BuildBusybox, BuildDockerArchive} {
		a, err := os.ReadFile(build(t, "", WithRef("cube.test/r:v1")))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(build(t, "", WithRef("cube.test/r:v1")))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("two builds with the same options differ (%d and %d bytes)", len(a), len(b))
		}
	}
	if a, b := Digest(t, BusyboxImage(t)), Digest(t, BusyboxImage(t)); a != b {
		t.Errorf("BusyboxImage digests %s and %s differ", a, b)
	}
}

func TestRegistryRoundTrip(t *testing.T) {
	reg := StartRegistry(t)
	img := BusyboxImage(t)
	Push(t, img, reg+"/imagetest/busybox:v1")
	r, err := name.ParseReference(reg + "/imagetest/busybox:v1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(r, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("remote.Image(%s) = %v", r, err)
	}
	if d := Digest(t, got); d != Digest(t, img) {
		t.Errorf("pulled digest %s; pushed %s", d, Digest(t, img))
	}
}

func TestMaliciousEntries(t *testing.T) {
	outside := t.TempDir()
	for _, a := range Attacks() {
		es, offending := MaliciousEntries(a, outside)
		found := false
		for _, e := range es {
			found = found || e.Header.Name == offending
		}
		if !found || len(MaliciousLayerTar(t, a, outside)) == 0 {
			t.Errorf("MaliciousEntries(%s) = %d entries without the offending %q", a, len(es), offending)
		}
	}
}
