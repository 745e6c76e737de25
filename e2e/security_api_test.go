package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
)

// refused asserts that a CLI run failed with a message containing want.
func refused(t *testing.T, what string, stdout, stderr string, code int, want string) {
	t.Helper()
	if code == 0 || !strings.Contains(stderr, want) {
		t.Errorf("%s: exit %d, stdout %q, stderr %q; want a failure saying %q", what, code, stdout, stderr, want)
	}
}

func statusOf(err error) int {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// TestSecurityAPITenantTokenLifecycle drives tenants and tokens through the
// real `cube` binary against a real `cube up`: a second create is refused
// and keeps the quotas, a read-only token cannot write, a tenant's
// priority system and host port 80 are refused until (for the priority)
// the admin grants it, and revoking a token or removing its tenant makes
// the very next call 401.
func TestSecurityAPITenantTokenLifecycle(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()

	acme := strings.TrimSpace(c.mustCube("tenant", "create", "acme", "--allow-runtime", "runc", "--quota", "batch=cpu=2,instances=3"))
	if !strings.HasPrefix(acme, "cube_") {
		t.Fatalf("tenant create printed %q; want a token", acme)
	}
	out, errOut, code := c.cube("", "tenant", "create", "acme", "--allow-runtime", "runc")
	refused(t, "second tenant create", out, errOut, code, `tenant "acme" already exists`)
	var tenants []v1.Tenant
	if err := json.Unmarshal([]byte(c.mustCube("tenant", "ls", "-o", "json")), &tenants); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tn := range tenants {
		if tn.Metadata.Name == "acme" {
			found = true
			if q := tn.Spec.Quotas["batch"]; q.CPU != "2" || q.Instances != 3 {
				t.Errorf("acme's batch quota after a second create = %+v; want cpu 2, 3 instances", q)
			}
		}
	}
	if !found {
		t.Fatalf("tenant ls shows no acme: %+v", tenants)
	}
	if _, errOut, code := c.cubeAs(acme, "ps"); code != 0 {
		t.Fatalf("cube ps as acme: exit %d: %s", code, errOut)
	}

	// A read-only token reads and cannot write.
	var ro v1.Token
	if err := json.Unmarshal([]byte(c.mustCube("token", "create", "--tenant", "acme", "--scope", "read-only", "-o", "json")), &ro); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := c.cubeAs(ro.Token, "ps"); code != 0 {
		t.Errorf("cube ps with a read-only token: exit %d: %s", code, errOut)
	}
	out, errOut, code = c.cubeAs(ro.Token, "run", "--name", "w", "busybox")
	refused(t, "cube run with a read-only token", out, errOut, code, "is read-only")

	// Policy: priority system needs the admin's grant; port 80 is admin's.
	out, errOut, code = c.cubeAs(acme, "run", "--priority", "system", "--name", "vip", "busybox")
	refused(t, "cube run --priority system as acme", out, errOut, code,
		`priority "system" is not granted to tenant acme: ask the admin for `+"`cube tenant update acme --allow-priority system`")
	sys := &v1.Instance{Metadata: v1.ObjectMeta{Name: "vip"}, Spec: v1.InstanceSpec{Priority: "system", Containers: []v1.Container{{Image: "busybox"}}}}
	acmeClient := client.New(c.client.Server(), acme)
	if _, err := acmeClient.CreateInstance(ctx, sys); statusOf(err) != 403 {
		t.Errorf("acme's priority system instance: %v (status %d); want 403", err, statusOf(err))
	}
	out, errOut, code = c.cubeAs(acme, "run", "-p", "80:80", "--name", "web", "busybox")
	refused(t, "cube run -p 80:80 as acme", out, errOut, code, "host ports below 1024 are for the admin tenant only")
	_, port, _ := strings.Cut(c.listen, ":")
	out, errOut, code = c.cubeAs(acme, "run", "-p", port+":80", "--name", "web", "busybox")
	refused(t, "cube run publishing the API's port as acme", out, errOut, code, "used by the platform itself")

	c.mustCube("tenant", "update", "acme", "--allow-priority", "system")
	// Granted, the spec passes policy and fails only on the image acme
	// never imported (a positive control for the 403 above).
	if _, err := acmeClient.CreateInstance(ctx, sys); statusOf(err) != 422 || !strings.Contains(err.Error(), "not found") {
		t.Errorf("acme's priority system instance after the grant: %v; want 422 image not found", err)
	}
	if err := json.Unmarshal([]byte(c.mustCube("tenant", "ls", "-o", "json")), &tenants); err != nil {
		t.Fatal(err)
	}
	for _, tn := range tenants {
		if tn.Metadata.Name == "acme" && (tn.Spec.Quotas["batch"].Instances != 3 || fmt.Sprint(tn.Spec.AllowPriorities) != "[system]") {
			t.Errorf("acme after update = %+v; want its quota kept and system granted", tn.Spec)
		}
	}

	// A tenant token manages no tenants and mints no tokens for others.
	out, errOut, code = c.cubeAs(acme, "tenant", "create", "evil", "--allow-runtime", "runc")
	refused(t, "tenant create as acme", out, errOut, code, "only an admin token of the admin tenant can create tenants")
	out, errOut, code = c.cubeAs(acme, "token", "create", "--tenant", "admin")
	refused(t, "token create for admin as acme", out, errOut, code, "only an admin token can mint tokens for another tenant")

	// token ls shows IDs, never secrets; revoke makes the next call 401.
	ls := c.mustCube("token", "ls", "--tenant", "acme")
	if strings.Contains(ls, strings.TrimPrefix(acme, "cube_")) || strings.Contains(ls, strings.TrimPrefix(ro.Token, "cube_")) {
		t.Fatalf("token ls shows a secret:\n%s", ls)
	}
	var toks []v1.Token
	if err := json.Unmarshal([]byte(c.mustCube("token", "ls", "--tenant", "acme", "-o", "json")), &toks); err != nil {
		t.Fatal(err)
	}
	var acmeID string
	for _, tk := range toks {
		if tk.Scope == "tenant" {
			acmeID = tk.Metadata.Name
		}
	}
	if len(toks) != 2 || acmeID == "" || !strings.Contains(ls, ro.Metadata.Name) || !strings.Contains(ls, acmeID) {
		t.Fatalf("token ls --tenant acme:\n%s\nwant the tenant token and %s", ls, ro.Metadata.Name)
	}
	c.mustCube("token", "revoke", acmeID)
	out, errOut, code = c.cubeAs(acme, "ps")
	refused(t, "cube ps with a revoked token", out, errOut, code, "the token is not valid")
	if _, err := acmeClient.ListInstances(ctx, client.ListOptions{}); statusOf(err) != 401 {
		t.Errorf("revoked token: %v; want 401", err)
	}
	if _, errOut, code := c.cubeAs(ro.Token, "ps"); code != 0 {
		t.Errorf("the read-only token after revoking the other: exit %d: %s", code, errOut)
	}

	// Removing the tenant revokes its remaining tokens.
	c.mustCube("tenant", "rm", "acme")
	out, errOut, code = c.cubeAs(ro.Token, "ps")
	refused(t, "cube ps with a token of a removed tenant", out, errOut, code, "the token is not valid")
	out, errOut, code = c.cubeAs(ro.Token, "tenant", "create", "evil", "--allow-runtime", "runc")
	refused(t, "tenant create with a removed tenant's token", out, errOut, code, "not valid")
}
