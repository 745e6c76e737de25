package cli

import (
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/internal/apitest"
	"github.com/spf13/cobra"
)

// TestTenantAndTokenVerbs drives cube tenant and cube token against the
// real API server: update changes only the flags given, ls prints tables
// and JSON, and a revoked token stops working.
func TestTenantAndTokenVerbs(t *testing.T) {
	_, h, admin := apitest.Server(t, "admin")
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	cfg := &client.Config{}
	cfg.Upsert(client.Context{Name: "test", Server: hs.URL, Token: admin})
	if err := cfg.Save(cfgPath); err != nil {
		t.Fatal(err)
	}
	must := func(newCmd func(*globals) *cobra.Command, args ...string) string {
		t.Helper()
		out, errOut, code := runCmd(t, newCmd, cfgPath, "", args...)
		if code != 0 {
			t.Fatalf("cube %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	tok := strings.TrimSpace(must(newTenantCmd, "create", "acme", "--quota", "batch=cpu=2,instances=3", "--ttl", "720h"))
	if !strings.HasPrefix(tok, "cube_") {
		t.Fatalf("tenant create printed %q; want a token", tok)
	}
	if _, errOut, code := runCmd(t, newTenantCmd, cfgPath, "", "create", "acme"); code == 0 || !strings.Contains(errOut, "already exists") {
		t.Errorf("second create: exit %d, %q; want refused", code, errOut)
	}
	must(newTenantCmd, "update", "acme", "--allow-priority", "system", "--allow-toleration", "gpu")
	table := must(newTenantCmd, "ls")
	if !strings.Contains(table, "NAME") || !strings.Contains(table, "acme") || !strings.Contains(table, "system") || !strings.Contains(table, "batch(cpu=2,instances=3)") {
		t.Errorf("tenant ls table:\n%s\nwant acme with its grant and quota", table)
	}
	var got v1.Tenant
	if err := json.Unmarshal([]byte(must(newTenantCmd, "ls", "acme", "-o", "json")), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Quotas["batch"].Instances != 3 || strings.Join(got.Spec.AllowTolerations, ",") != "gpu" || got.Status.MaxInstances != 100 {
		t.Errorf("tenant acme = %+v; want its quota kept, gpu granted, bound 100", got)
	}

	var ro v1.Token
	if err := json.Unmarshal([]byte(must(newTokenCmd, "create", "--tenant", "acme", "--scope", "read-only", "-o", "json")), &ro); err != nil {
		t.Fatal(err)
	}
	ls := must(newTokenCmd, "ls", "--tenant", "acme")
	if !strings.Contains(ls, ro.Metadata.Name) || !strings.Contains(ls, "read-only") || strings.Contains(ls, strings.TrimPrefix(ro.Token, "cube_")) {
		t.Errorf("token ls:\n%s\nwant %s read-only, without its secret", ls, ro.Metadata.Name)
	}
	c := client.New(hs.URL, ro.Token)
	if _, err := c.ListInstances(t.Context(), client.ListOptions{}); err != nil {
		t.Fatalf("read-only token lists: %v", err)
	}
	must(newTokenCmd, "revoke", ro.Metadata.Name)
	if _, err := c.ListInstances(t.Context(), client.ListOptions{}); err == nil || !strings.Contains(err.Error(), "not valid") {
		t.Errorf("revoked token lists: %v; want 401", err)
	}
	must(newTenantCmd, "rm", "acme")
	if _, err := client.New(hs.URL, tok).ListInstances(t.Context(), client.ListOptions{}); err == nil {
		t.Errorf("a removed tenant's token still works")
	}
}
