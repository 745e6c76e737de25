package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/image/imagetest"
)

// TestSecurityImagesLayerTheft: tenant rival imports a manifest naming
// tenant acme's private layer without carrying the blob. The import fails
// exactly as it does for a layer nobody has (same exit code, same bytes on
// stderr), rival cannot run acme's image, and rival may import the same
// image when it brings the bytes.
func TestSecurityImagesLayerTheft(t *testing.T) {
	c := startCluster(t)
	acme := strings.TrimSpace(c.mustCube("tenant", "create", "acme", "--allow-runtime", "runc"))
	rival := strings.TrimSpace(c.mustCube("tenant", "create", "rival", "--allow-runtime", "runc"))

	secret := imagetest.WithLayer(imagetest.File("secret.txt", 0o600, "acme's private key\n"))
	imgA := imagetest.BusyboxImage(t, secret)
	pathA := imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "acme.tar"),
		imagetest.LayoutEntry{Image: imgA, Annotations: imagetest.RefAnnotations("cube.test/acme/app:v1")})
	c.mustCubeAs(acme, "image", "import", pathA)

	const stolen = "cube.test/rival/stolen:v1"
	outT, errT, codeT := c.cubeAs(rival, "image", "import", imagetest.WriteOCIArchiveWithout(t, imgA, stolen, 2))
	random := make([]byte, 16)
	rand.Read(random)
	imgR := imagetest.BusyboxImage(t, imagetest.WithLayer(imagetest.File("secret.txt", 0o600, hex.EncodeToString(random))))
	outU, errU, codeU := c.cubeAs(rival, "image", "import", imagetest.WriteOCIArchiveWithout(t, imgR, stolen, 2))
	if codeT == 0 || !strings.Contains(errT, "not in the archive") {
		t.Fatalf("rival imports acme's layer without its bytes: exit %d, stdout %q, stderr %q; want it refused", codeT, outT, errT)
	}
	if codeT != codeU || errT != errU || outT != outU {
		t.Errorf("acme's layer and an unknown one are refused differently:\n  exit %d, %q\n  exit %d, %q", codeT, errT, codeU, errU)
	}
	if out := c.mustCubeAs(rival, "image", "ls"); strings.Contains(out, "stolen") || strings.Contains(out, "acme") {
		t.Errorf("rival's image ls after the refused imports = %q; want neither", out)
	}
	// Rival cannot run acme's image by acme's name: the same answer as
	// for a name nobody has.
	_, errRun, codeRun := c.cubeAs(rival, "run", "--name", "peek", "cube.test/acme/app:v1", "--", "cat", "/secret.txt")
	_, errNone, codeNone := c.cubeAs(rival, "run", "--name", "peek", "cube.test/acme/nothing:v1", "--", "cat", "/secret.txt")
	if codeRun == 0 || codeRun != codeNone || strings.ReplaceAll(errRun, "app", "nothing") != errNone {
		t.Errorf("rival runs acme's image: exit %d %q; a name nobody has: exit %d %q; want the same refusal", codeRun, errRun, codeNone, errNone)
	}

	// With the bytes, rival's import of the very same image works.
	pathB := imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "rival.tar"),
		imagetest.LayoutEntry{Image: imgA, Annotations: imagetest.RefAnnotations("cube.test/rival/copy:v1")})
	if out := c.mustCubeAs(rival, "image", "import", pathB); !strings.Contains(out, "cube.test/rival/copy:v1") {
		t.Errorf("rival's import with the bytes printed %q; want cube.test/rival/copy:v1", out)
	}
	if out := c.mustCubeAs(rival, "image", "ls"); !strings.Contains(out, "cube.test/rival/copy") {
		t.Errorf("rival's image ls = %q; want cube.test/rival/copy", out)
	}

	// A tenant's image-storage quota (cube tenant create --image-storage)
	// stops an import at the bound.
	tiny := strings.TrimSpace(c.mustCube("tenant", "create", "tiny", "--allow-runtime", "runc", "--image-storage", "1Mi"))
	if _, errOut, code := c.cubeAs(tiny, "image", "import", pathA); code == 0 || !strings.Contains(errOut, "image storage quota") || !strings.Contains(errOut, "1.0 MiB") {
		t.Errorf("import over a 1Mi image storage quota: exit %d, %q; want it refused naming the quota", code, errOut)
	}
	if out := c.mustCubeAs(tiny, "image", "ls"); strings.Contains(out, "cube.test") {
		t.Errorf("tiny's image ls after a refused import = %q; want nothing", out)
	}
}

// TestSecurityImagesNameLeak: a name acme gave an image is invisible to
// rival, in image ls and in run, and rival's unnamed import of the same
// image does not take acme's name.
func TestSecurityImagesNameLeak(t *testing.T) {
	c := startCluster(t)
	acme := strings.TrimSpace(c.mustCube("tenant", "create", "acme", "--allow-runtime", "runc"))
	rival := strings.TrimSpace(c.mustCube("tenant", "create", "rival", "--allow-runtime", "runc"))

	img := imagetest.BusyboxImage(t)
	digest := imagetest.Digest(t, img)
	named := imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "named.tar"),
		imagetest.LayoutEntry{Image: img, Annotations: imagetest.RefAnnotations("cube.test/acme/project-x:v1")})
	c.mustCubeAs(acme, "image", "import", named)
	if out := c.mustCubeAs(acme, "image", "ls"); !strings.Contains(out, "project-x") {
		t.Fatalf("acme's image ls = %q; want project-x (the positive control)", out)
	}

	unnamed := imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "unnamed.tar"), imagetest.LayoutEntry{Image: img})
	out := c.mustCubeAs(rival, "image", "import", unnamed)
	if strings.Contains(out, "project-x") || !strings.Contains(out, digest) {
		t.Errorf("rival's unnamed import printed %q; want the digest %s and no acme name", out, digest)
	}
	if ls := c.mustCubeAs(rival, "image", "ls"); strings.Contains(ls, "project-x") || strings.Contains(ls, "acme") {
		t.Errorf("rival's image ls = %q; want no acme name", ls)
	}
	_, errRun, codeRun := c.cubeAs(rival, "run", "--name", "x", "cube.test/acme/project-x:v1", "--", "true")
	_, errNone, codeNone := c.cubeAs(rival, "run", "--name", "x", "cube.test/acme/project-y:v1", "--", "true")
	if codeRun == 0 || codeRun != codeNone || strings.ReplaceAll(errRun, "project-x", "project-y") != errNone {
		t.Errorf("rival runs acme's name: exit %d %q; a name nobody has: exit %d %q; want the same refusal", codeRun, errRun, codeNone, errNone)
	}
}

// importAs imports the archive at path with cl (another tenant's client).
func importAs(ctx context.Context, cl *client.Client, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = cl.ImportImage(ctx, f)
	return err
}

// TestSecurityImagesPullGuard: through the real binary, a tenant's pull
// from a loopback registry is refused with 403 naming the flag, the admin's
// is not, and after `cube up --registry-allow` the tenant's works.
func TestSecurityImagesPullGuard(t *testing.T) {
	c := startCluster(t)
	ref := pushBusybox(t)
	reg, _, _ := strings.Cut(ref, "/")
	tok := strings.TrimSpace(c.mustCube("tenant", "create", "acme", "--allow-runtime", "runc"))
	_, errOut, code := c.cubeAs(tok, "image", "pull", ref, "--insecure")
	if code == 0 || !strings.Contains(errOut, "loopback") || !strings.Contains(errOut, "--registry-allow "+reg) {
		t.Fatalf("tenant pull from %s: exit %d, %q; want it refused naming loopback and --registry-allow %s", reg, code, errOut, reg)
	}
	if _, err := client.New(c.client.Server(), tok).PullImage(context.Background(), ref, true); apiError(t, err).Status != 403 {
		t.Errorf("tenant pull from loopback: %v; want 403", err)
	}
	c.mustCube("image", "pull", ref, "--insecure") // the admin: allowed

	// The operator allows the registry: the tenant's pull works.
	c.stop()
	c.restartWith("--registry-allow", reg)
	c.mustCubeAs(tok, "image", "pull", ref, "--insecure")
	if out := c.mustCubeAs(tok, "image", "ls"); !strings.Contains(out, "busybox") {
		t.Errorf("tenant image ls after an allowed pull = %q; want busybox", out)
	}
}
