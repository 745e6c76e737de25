package cli

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/internal/apitest"
	"github.com/spf13/cobra"
)

// startServer runs the real API server over an embedded etcd, with
// busybox recorded for tenant t1, and writes a client config for it.
// It returns the config path.
func startServer(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	st, h, tok := apitest.Server(t, "t1")
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	ref := "docker.io/library/busybox:latest"
	rec := &v1.Image{APIVersion: v1.Version, Kind: "Image", Metadata: v1.ObjectMeta{Name: ref, Tenant: "t1"}, Digest: "sha256:" + strings.Repeat("ab", 32)}
	if err := st.Images().Create(ctx, st.Images().Key("t1", url.PathEscape(ref)), rec); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	cfg := &client.Config{}
	cfg.Upsert(client.Context{Name: "test", Server: hs.URL, Token: tok})
	if err := cfg.Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCmd runs one verb as Main would and returns its stdout, stderr and
// exit code.
func runCmd(t *testing.T, newCmd func(*globals) *cobra.Command, configPath, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	g := &globals{configPath: configPath, stdout: &out, stderr: &errb, stdin: strings.NewReader(stdin)}
	cmd := newCmd(g)
	cmd.SetArgs(args)
	cmd.SetOut(&errb)
	cmd.SetErr(&errb)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	var ee *ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.Code
	}
	errb.WriteString(err.Error())
	return out.String(), errb.String(), ExitCubeError
}

const webManifest = `apiVersion: v1
kind: Instance
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - image: busybox
    command: [httpd, -f, -p, "80"]
`

// TestDiff: a new instance is all added (exit 1); once applied, the same
// manifest diffs to nothing (exit 0), even with an empty list the server
// drops; a changed one shows the change, says apply would refuse it, and
// exits 1; errors exit 125.
func TestDiff(t *testing.T) {
	cfg := startServer(t)
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	same := write("web.yaml", webManifest)

	out, errOut, code := runCmd(t, newDiffCmd, cfg, "", "-f", same)
	if code != ExitDiffers || !strings.HasPrefix(out, "--- instance/web (live)\n+++ instance/web (desired)\n@@ -0,0 +1,") {
		t.Fatalf("diff of a new instance: exit %d, stdout %q, stderr %q; want exit 1 and an all-added diff", code, out, errOut)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[3:] {
		if !strings.HasPrefix(l, "+") {
			t.Errorf("diff of a new instance has line %q; want only added lines", l)
		}
	}
	for _, want := range []string{"+  name: web\n", "+    app: web\n", "+  - command:\n", "+    image: busybox\n", "+  restartPolicy: Always\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("diff of a new instance lacks %q:\n%s", want, out)
		}
	}
	if _, _, code := runCmd(t, newApplyCmd, cfg, "", "-f", same); code != 0 {
		t.Fatalf("apply: exit %d", code)
	}

	if out, errOut, code := runCmd(t, newDiffCmd, cfg, webManifest, "-f", "-"); code != 0 || out != "" || errOut != "" {
		t.Errorf("diff of the applied manifest: exit %d, stdout %q, stderr %q; want exit 0 and nothing", code, out, errOut)
	}
	emptyEnv := strings.Replace(webManifest, "    command:", "    env: []\n    command:", 1)
	if out, _, code := runCmd(t, newDiffCmd, cfg, emptyEnv, "-f", "-"); code != 0 || out != "" {
		t.Errorf("diff with env: []: exit %d, stdout %q; want exit 0 (the server stores no env either)", code, out)
	}
	if out, _, code := runCmd(t, newApplyCmd, cfg, emptyEnv, "-f", "-"); code != 0 || !strings.Contains(out, "unchanged") {
		t.Errorf("apply with env: []: exit %d, stdout %q; want unchanged", code, out)
	}

	changed := write("changed.yaml", strings.Replace(webManifest, `"80"`, `"8080"`, 1)+"---\n"+strings.ReplaceAll(webManifest, "web", "api"))
	out, errOut, code = runCmd(t, newDiffCmd, cfg, "", "-f", changed)
	if code != ExitDiffers {
		t.Fatalf("diff of a changed manifest: exit %d, stderr %q; want 1", code, errOut)
	}
	wantOut := `--- instance/web (live)
+++ instance/web (desired)
@@ -8,7 +8,7 @@
     - httpd
     - -f
     - -p
-    - "80"
+    - "8080"
     image: busybox
     name: main
     resources:
`
	if !strings.HasPrefix(out, wantOut) || !strings.Contains(out, "+++ instance/api (desired)\n@@ -0,0 +1,") {
		t.Errorf("diff of a changed manifest printed\n%s\nwant it to start with\n%s\nand then add instance/api", out, wantOut)
	}
	if !strings.Contains(errOut, "instance/web: instances are immutable") || !strings.Contains(errOut, "cube rm --force web") || strings.Contains(errOut, "instance/api") {
		t.Errorf("diff of a changed manifest: stderr %q; want the immutability note for web only", errOut)
	}
	_, applyErr, _ := runCmd(t, newApplyCmd, cfg, "", "-f", changed)
	if !strings.Contains(applyErr, "immutable") {
		t.Errorf("apply of the changed manifest: %q; want it refused as diff said", applyErr)
	}

	bad := []struct{ name, stdin, want string }{
		{"unknown field", "metadata: {name: x}\nspec: {containerz: []}\n", "containerz"},
		{"invalid spec", "metadata: {name: x}\nspec: {containers: []}\n", "instance/x"},
		{"image not imported", strings.Replace(strings.ReplaceAll(webManifest, "web", "db"), "image: busybox", "image: nginx", 1), `image "nginx" not found`},
	}
	for _, tt := range bad {
		if _, errOut, code := runCmd(t, newDiffCmd, cfg, tt.stdin, "-f", "-"); code != ExitCubeError || !strings.Contains(errOut, tt.want) {
			t.Errorf("diff (%s): exit %d, stderr %q; want 125 and %q", tt.name, code, errOut, tt.want)
		}
	}
	if _, errOut, code := runCmd(t, newDiffCmd, cfg, ""); code != ExitCubeError || !strings.Contains(errOut, "-f") {
		t.Errorf("diff without -f: exit %d, stderr %q; want 125 asking for -f", code, errOut)
	}
	down := filepath.Join(t.TempDir(), "down.yaml")
	c := &client.Config{}
	c.Upsert(client.Context{Name: "down", Server: "http://127.0.0.1:1", Token: "cube_x"})
	if err := c.Save(down); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runCmd(t, newDiffCmd, down, webManifest, "-f", "-"); code != ExitCubeError || !strings.Contains(errOut, "cannot reach") {
		t.Errorf("diff against no server: exit %d, stderr %q; want 125", code, errOut)
	}
}

func TestUnifiedDiff(t *testing.T) {
	lines := func(n int, change map[int]string) string {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			if s, ok := change[i]; ok {
				if s != "" {
					b.WriteString(s + "\n")
				}
				continue
			}
			b.WriteString("l" + string(rune('a'+i-1)) + "\n")
		}
		return b.String()
	}
	tests := []struct {
		name string
		a, b string
		want string
	}{
		{"equal", "x\n", "x\n", ""},
		{"added to nothing", "", "a\nb\n", "--- A\n+++ B\n@@ -0,0 +1,2 @@\n+a\n+b\n"},
		{"removed all", "a\n", "", "--- A\n+++ B\n@@ -1,1 +0,0 @@\n-a\n"},
		{"one change in the middle", lines(9, nil), lines(9, map[int]string{5: "X"}),
			"--- A\n+++ B\n@@ -2,7 +2,7 @@\n lb\n lc\n ld\n-le\n+X\n lf\n lg\n lh\n"},
		{"two changes far apart: two hunks", lines(20, nil), lines(20, map[int]string{2: "X", 18: ""}),
			"--- A\n+++ B\n@@ -1,5 +1,5 @@\n la\n-lb\n+X\n lc\n ld\n le\n@@ -15,6 +15,5 @@\n lo\n lp\n lq\n-lr\n ls\n lt\n"},
		{"two changes near: one hunk", lines(12, nil), lines(12, map[int]string{2: "X", 9: "Y"}),
			"--- A\n+++ B\n@@ -1,12 +1,12 @@\n la\n-lb\n+X\n lc\n ld\n le\n lf\n lg\n lh\n-li\n+Y\n lj\n lk\n ll\n"},
	}
	for _, tt := range tests {
		if got := unifiedDiff("A", "B", tt.a, tt.b); got != tt.want {
			t.Errorf("%s: unifiedDiff =\n%s\nwant\n%s", tt.name, got, tt.want)
		}
	}
}
