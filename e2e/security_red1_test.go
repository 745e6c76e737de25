package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cube-platform/cube/image/imagetest"
)

// TestSecurityRed1WorkdirThroughProcFd: the CVE-2024-21626 class. An
// image's working directory that is clean and outside /proc, but a symlink
// to /proc/self/fd/N, would leave the process with a cwd on the host if
// runc leaked a host directory's fd into the container. Reading a host
// file by a relative path must fail; the command itself runs (control).
func TestSecurityRed1WorkdirThroughProcFd(t *testing.T) {
	c := startCluster(t)
	marker := "red1-host-secret-" + randHex(4)
	hostFile, err := os.CreateTemp("/tmp", "red1-marker-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(hostFile.Name()) })
	hostFile.WriteString(marker)
	hostFile.Close()

	ref := "cube.test/busybox:procfd"
	var links []imagetest.Entry
	for n := 3; n <= 9; n++ {
		links = append(links, imagetest.Symlink(fmt.Sprintf("w%d", n), fmt.Sprintf("/proc/self/fd/%d", n)))
	}
	links = append(links, imagetest.Symlink("wok", "/tmp"))
	archive := imagetest.BuildBusybox(t, "", imagetest.WithRef(ref), imagetest.WithLayer(links...))
	evil := strings.TrimSpace(c.mustCube("tenant", "create", "evil", "--allow-runtime", "runc"))
	c.mustCubeAs(evil, "image", "import", archive)
	rel := strings.Repeat("../", 12) + strings.TrimPrefix(hostFile.Name(), "/")
	ran := 0
	for n := 3; n <= 9; n++ {
		name := fmt.Sprintf("fd%d", n)
		out, errOut, _ := c.cubeAs(evil, "run", "--name", name, "--cpu", "0.1", "--memory", "32Mi", "--restart", "never", "--attach", "--rm",
			"--workdir", fmt.Sprintf("/w%d", n), ref, "--", "sh", "-c", `echo ran; cat "$0"`, rel)
		c.cubeAs(evil, "rm", "-f", name)
		if strings.Contains(out+errOut, marker) {
			t.Errorf("workdir /w%d -> /proc/self/fd/%d: the instance read the host file %s: %q", n, n, hostFile.Name(), out)
		}
		if strings.Contains(out, "ran") {
			ran++
		}
	}
	t.Logf("%d of 7 commands ran (the others were refused at start)", ran)
	// Control: a working directory that is a symlink inside the image is
	// followed, and the command runs there.
	out, errOut, code := c.cubeAs(evil, "run", "--name", "wok", "--cpu", "0.1", "--memory", "32Mi", "--restart", "never", "--attach", "--rm",
		"--workdir", "/wok", ref, "--", "sh", "-c", "echo ran in $(pwd -P)")
	if code != 0 || !strings.Contains(out, "ran in /tmp") {
		t.Errorf("control: workdir /wok -> /tmp = %q %q, exit %d; want it to run in /tmp", out, errOut, code)
	}
}
