package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cube-platform/cube/client"
)

const (
	localToken   = "cube_local-secret-token"
	stagingToken = "cube_staging-secret-token"
)

// writeConfig writes a two-context config to a temp $CUBE_CONFIG.
func writeConfig(t *testing.T) string {
	t.Helper()
	t.Setenv("CUBE_SERVER", "")
	t.Setenv("CUBE_TOKEN", "")
	path := filepath.Join(t.TempDir(), "config.yaml")
	t.Setenv("CUBE_CONFIG", path)
	cfg := &client.Config{}
	cfg.Upsert(client.Context{Name: "staging", Server: "https://staging.example:7680", Token: stagingToken})
	cfg.Upsert(client.Context{Name: "local", Server: "http://127.0.0.1:7680", Token: localToken})
	if err := cfg.Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func config(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runCmd(t, newConfigCmd, "", "", args...)
}

// TestConfigContexts: get-contexts lists (never a token) in every format,
// current-context names the current one, use-context switches it and
// keeps the file 0600, and an unknown name lists the known ones.
func TestConfigContexts(t *testing.T) {
	path := writeConfig(t)

	out, errOut, code := config(t, "get-contexts")
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(rows) != 3 || !reflect.DeepEqual(strings.Fields(rows[0]), []string{"CURRENT", "NAME", "SERVER"}) ||
		!reflect.DeepEqual(strings.Fields(rows[1]), []string{"staging", "https://staging.example:7680"}) ||
		!reflect.DeepEqual(strings.Fields(rows[2]), []string{"*", "local", "http://127.0.0.1:7680"}) {
		t.Errorf("get-contexts: exit %d, stdout\n%s\nstderr %q; want a header, staging, and * local", code, out, errOut)
	}
	for _, format := range []string{"table", "wide", "json", "yaml", "name", "jsonpath={.}"} {
		out, errOut, code := config(t, "get-contexts", "-o", format)
		if code != 0 || strings.Contains(out+errOut, "secret-token") || strings.Contains(strings.ToLower(out), "token") {
			t.Errorf("get-contexts -o %s: exit %d, output %q %q; want no token", format, code, out, errOut)
		}
	}
	out, _, _ = config(t, "get-contexts", "-o", "json")
	var views []map[string]any
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("get-contexts -o json: %v in %q", err, out)
	}
	want := []map[string]any{
		{"name": "staging", "server": "https://staging.example:7680", "current": false},
		{"name": "local", "server": "http://127.0.0.1:7680", "current": true},
	}
	if !reflect.DeepEqual(views, want) {
		t.Errorf("get-contexts -o json = %v; want %v", views, want)
	}
	if out, _, code := config(t, "get-contexts", "-o", "name"); code != 0 || out != "staging\nlocal\n" {
		t.Errorf("get-contexts -o name = %q, exit %d; want staging and local", out, code)
	}
	if out, _, code := config(t, "get-contexts", "staging", "-o", "name"); code != 0 || out != "staging\n" {
		t.Errorf("get-contexts staging -o name = %q, exit %d; want staging", out, code)
	}
	if _, errOut, code := config(t, "get-contexts", "-o", "xml"); code != ExitCubeError || !strings.Contains(errOut, "xml") {
		t.Errorf("get-contexts -o xml: exit %d, stderr %q; want 125", code, errOut)
	}

	if out, _, code := config(t, "current-context"); code != 0 || out != "local\n" {
		t.Errorf("current-context = %q, exit %d; want local", out, code)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := config(t, "use-context", "staging"); code != 0 || !strings.Contains(out, `"staging"`) {
		t.Fatalf("use-context staging: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out, _, _ := config(t, "current-context"); out != "staging\n" {
		t.Errorf("current-context after use-context staging = %q", out)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("config file after use-context: %v, %v; want mode 0600", st.Mode(), err)
	}
	cfg, err := client.LoadConfig(path)
	if err != nil || cfg.CurrentContext != "staging" || len(cfg.Contexts) != 2 || cfg.Contexts[1].Token != localToken {
		t.Errorf("config after use-context = %+v, %v; want staging current and both tokens kept", cfg, err)
	}
	if got, err := cfg.Resolve(""); err != nil || got.Token != stagingToken {
		t.Errorf("Resolve after use-context = %+v, %v; want the staging token", got, err)
	}

	before, _ := os.ReadFile(path)
	_, errOut, code = config(t, "use-context", "prod")
	if code != ExitCubeError || !strings.Contains(errOut, `context "prod" not found`) || !strings.Contains(errOut, "staging, local") {
		t.Errorf("use-context prod: exit %d, stderr %q; want 125 naming staging, local", code, errOut)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("use-context of an unknown name changed the file")
	}

	t.Setenv("CUBE_SERVER", "http://override:1")
	if _, errOut, _ := config(t, "get-contexts"); !strings.Contains(errOut, "CUBE_SERVER is set") {
		t.Errorf("get-contexts with CUBE_SERVER set: stderr %q; want a note", errOut)
	}
}

func TestConfigEmpty(t *testing.T) {
	t.Setenv("CUBE_CONFIG", filepath.Join(t.TempDir(), "missing.yaml"))
	if _, errOut, code := config(t, "current-context"); code != ExitCubeError || !strings.Contains(errOut, "no current context") || !strings.Contains(errOut, "cube up") {
		t.Errorf("current-context without a config: exit %d, stderr %q; want 125 pointing at cube up", code, errOut)
	}
	if out, _, code := config(t, "get-contexts", "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("get-contexts -o json without a config = %q, exit %d; want []", out, code)
	}
	if _, errOut, code := config(t, "use-context", "local"); code != ExitCubeError || !strings.Contains(errOut, "it has none") {
		t.Errorf("use-context without a config: exit %d, stderr %q; want 125", code, errOut)
	}
}
