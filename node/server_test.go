package node

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/internal/logfile"
)

// TestRequestsWaitForAdoption: a logs or exec request that reaches a
// restarted agent before its first list of instances is answered from the
// list, not with "not on node" for an instance whose state is right here.
// The request is sent before Start, so without the wait it would be
// answered at once, with a 404.
func TestRequestsWaitForAdoption(t *testing.T) {
	env := newReportEnv(t)
	ctx := context.Background()
	// Finished, so the agent has nothing to launch; its log is on disk.
	if _, err := env.st.Instances().Mutate(ctx, env.key, func(in *v1.Instance) error {
		in.Status.Phase = v1.PhaseSucceeded
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	logs := filepath.Join(state, "instances", "u1", "logs")
	if err := os.MkdirAll(logs, 0o700); err != nil {
		t.Fatal(err)
	}
	lw, err := logfile.NewWriter(filepath.Join(logs, "main.log"), logfile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := lw.Stream(logfile.Stdout)
	fmt.Fprintln(out, "hello from web")
	out.Close()
	if err := lw.End(); err != nil {
		t.Fatal(err)
	}
	lw.Close()
	a, err := New(fakeAgentConfig(t, env, state))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set(secretHeader, a.secret)
		rec := httptest.NewRecorder()
		a.routes().ServeHTTP(rec, req)
		return rec
	}
	early := make(chan *httptest.ResponseRecorder, 1)
	go func() { early <- get("/instances/a/web/logs") }()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rec := <-early
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "hello from web") {
		t.Fatalf("logs asked before the first list: %d %q; want 200 with the log", rec.Code, rec.Body.String())
	}
	// Once listed, what is not here is still not here: another tenant's
	// instance of the same name, and a name this node never had.
	for _, path := range []string{"/instances/b/web/logs", "/instances/a/nope/logs"} {
		if rec := get(path); rec.Code != http.StatusNotFound || strings.Contains(rec.Body.String(), "hello") {
			t.Errorf("GET %s = %d %q; want 404 and nothing of a/web", path, rec.Code, rec.Body.String())
		}
	}
}
