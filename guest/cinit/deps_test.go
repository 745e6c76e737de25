package cinit_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStaysLean: cmd/cube-init, which every container start under TCG
// pays to load and initialize, links only the standard library,
// x/sys/unix and guest/cinit (see the package comment). A heavy package
// is named so that the failure says what crept in.
func TestStaysLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/cube-platform/cube/cmd/cube-init").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v: %s", err, out)
	}
	forbidden := []string{"net", "regexp", "log/slog", "google.golang.org/", "github.com/containerd/", "github.com/vishvananda/"}
	for _, pkg := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(pkg, f)) {
				t.Errorf("cube-init links %s (forbidden: %s)", pkg, f)
			}
		}
		if !strings.Contains(strings.SplitN(pkg, "/", 2)[0], ".") {
			continue // the standard library
		}
		if pkg != "golang.org/x/sys/unix" && pkg != "github.com/cube-platform/cube/cmd/cube-init" && !strings.HasPrefix(pkg, "github.com/cube-platform/cube/guest/cinit") {
			t.Errorf("cube-init links %s; it may use only the standard library, x/sys/unix and guest/cinit", pkg)
		}
	}
}
