package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/runc"
)

// fakeConnectBackend is runc with a Connect that writes the interface it
// got to <StateDir>.iface.json, so a test sees what reached the sandbox.
const fakeConnectBackend = "fake-connect"

func init() {
	Backends[fakeConnectBackend] = func(spec sandbox.Spec, opts sandbox.Options) (sandbox.Sandbox, error) {
		sb, err := runc.Factory(spec, opts)
		return fakeConnectSandbox{sb, spec.StateDir + ".iface.json"}, err
	}
}

type fakeConnectSandbox struct {
	sandbox.Sandbox
	record string
}

func (f fakeConnectSandbox) Connect(ctx context.Context, iface sandbox.Interface) error {
	b, _ := json.Marshal(iface)
	return os.WriteFile(f.record, b, 0o600)
}

// TestStartConnectsTheInterface: the interface given to Start reaches the
// sandbox's Connect before any container runs; bad start bodies are
// refused and change nothing.
func TestStartConnectsTheInterface(t *testing.T) {
	cfg := testConfig(t, RestartNever, shell("c", "echo started"))
	cfg.AwaitStart = true
	cfg.Backend = fakeConnectBackend
	c := launch(t, cfg)

	raw := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", cfg.Socket)
	}}}
	for name, body := range map[string][]byte{
		"malformed": []byte(`{"interface": [`),
		"too large": append(append([]byte(`{"interface":{"name":"`), bytes.Repeat([]byte("x"), 128<<10)...), `"}}`...),
	} {
		resp, err := raw.Post("http://shim/start", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s start: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s start body: HTTP %d; want 400", name, resp.StatusCode)
		}
	}
	if st, err := c.State(testCtx(t), 0); err != nil || st.Phase != PhaseCreating {
		t.Fatalf("state after refused starts = %+v, %v; want still Creating", st, err)
	}

	iface := sandbox.Interface{Name: "eth0", MAC: "02:00:00:00:00:01", Address: "10.0.0.2/24", Gateway: "10.0.0.1",
		Routes: []sandbox.Route{{Dst: "0.0.0.0/0", Via: "10.0.0.1"}}, DNS: sandbox.DNS{Nameservers: []string{"10.0.0.1"}}}
	if err := c.Start(testCtx(t), &iface); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, c, "Succeeded", func(s State) bool { return s.Phase == PhaseSucceeded || s.Phase == PhaseFailed })
	if st.Phase != PhaseSucceeded || readLog(t, cfg, "c") != "started\n" {
		t.Fatalf("after Start: %+v; want Succeeded", st)
	}
	b, err := os.ReadFile(filepath.Clean(cfg.Sandbox.StateDir) + ".iface.json")
	var got sandbox.Interface
	if err != nil || json.Unmarshal(b, &got) != nil || !reflect.DeepEqual(got, iface) {
		t.Errorf("Connect got %s (%v); want %+v", b, err, iface)
	}
	if strings.Contains(string(b), "xxxx") {
		t.Error("a refused start body reached Connect")
	}
}
