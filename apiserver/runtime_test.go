package apiserver

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
)

// TestRuntimePolicy: a tenant other than admin runs microvm alone: its
// instances default to it whatever the server's default, and runc is
// refused with 403 naming the grant until the admin grants it; the admin
// tenant follows the server's default and may name either.
func TestRuntimePolicy(t *testing.T) {
	def := v1.RuntimeRunc
	ss := newSecServer(t, func(c *Config) { c.DefaultRuntime = func() string { return def } })
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	ss.image(AdminTenant)
	runtimeOf := func(tok string, in *v1.Instance) string {
		t.Helper()
		var out v1.Instance
		_ = json.Unmarshal(ss.must(http.StatusOK, tok, "POST", "/v1/instances?dryRun=true", in).body, &out)
		return out.Spec.Runtime
	}
	runc := inst("r", func(in *v1.Instance) { in.Spec.Runtime = v1.RuntimeRunc })
	vm := inst("v", func(in *v1.Instance) { in.Spec.Runtime = v1.RuntimeMicroVM })

	if got := runtimeOf(acme, inst("d", nil)); got != v1.RuntimeMicroVM {
		t.Errorf("acme's instance without a runtime got %q; want microvm although the server's default is runc", got)
	}
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", runc), http.StatusForbidden, "spec.runtime",
		`runtime "runc" is not granted to tenant acme, which may use microvm: ask the admin for `+"`cube tenant update acme --allow-runtime runc`")
	if got := runtimeOf(acme, vm); got != v1.RuntimeMicroVM {
		t.Errorf("acme's microvm instance got %q", got)
	}
	// The admin tenant: the server's default, and either runtime.
	if got := runtimeOf(ss.admin, inst("d", nil)); got != v1.RuntimeRunc {
		t.Errorf("admin's instance without a runtime got %q; want the server's default runc", got)
	}
	def = v1.RuntimeMicroVM
	if got := runtimeOf(ss.admin, inst("d", nil)); got != v1.RuntimeMicroVM {
		t.Errorf("admin's instance without a runtime got %q; want the server's default, now microvm", got)
	}
	if got := runtimeOf(ss.admin, runc); got != v1.RuntimeRunc {
		t.Errorf("admin's runc instance got %q", got)
	}
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", inst("x", func(in *v1.Instance) { in.Spec.Runtime = "kata" })),
		http.StatusUnprocessableEntity, "spec.runtime", `"kata" is not one of microvm, runc`)

	// Granted, runc is accepted, and the default runc applies; withdrawn,
	// it is refused again.
	ss.must(http.StatusOK, ss.admin, "PATCH", "/v1/tenants/acme", v1.TenantUpdate{AllowRuntimes: []string{"runc"}})
	if got := runtimeOf(acme, runc); got != v1.RuntimeRunc {
		t.Errorf("acme's runc instance after the grant got %q", got)
	}
	def = v1.RuntimeRunc
	if got := runtimeOf(acme, inst("d", nil)); got != v1.RuntimeRunc {
		t.Errorf("acme's instance without a runtime after the grant got %q; want the server's default runc", got)
	}
	var tn v1.Tenant
	_ = json.Unmarshal(ss.must(http.StatusOK, ss.admin, "GET", "/v1/tenants/acme", nil).body, &tn)
	if !slices.Equal(tn.Spec.AllowRuntimes, []string{"runc"}) || !slices.Equal(tn.Status.Runtimes, []string{"microvm", "runc"}) {
		t.Errorf("tenant acme: spec %v status %v; want the grant and both runtimes", tn.Spec.AllowRuntimes, tn.Status.Runtimes)
	}
	ss.must(http.StatusOK, ss.admin, "PATCH", "/v1/tenants/acme", v1.TenantUpdate{DenyRuntimes: []string{"runc"}})
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", runc), http.StatusForbidden, "spec.runtime", "not granted")
	// microvm is not a grant: it cannot be withdrawn, nor can a tenant be
	// granted a runtime that does not exist.
	wantRefusal(t, ss.do(ss.admin, "PATCH", "/v1/tenants/acme", v1.TenantUpdate{AllowRuntimes: []string{"host"}}),
		http.StatusUnprocessableEntity, "allowRuntimes[0]", `"host" is not one of microvm, runc`)
	wantRefusal(t, ss.do(ss.admin, "POST", "/v1/tenants", v1.TenantRequest{Name: "x", AllowRuntimes: []string{"docker"}}),
		http.StatusUnprocessableEntity, "allowRuntimes[0]", "is not one of")
	if got := runtimeOf(acme, vm); got != v1.RuntimeMicroVM {
		t.Errorf("acme's microvm instance after denying runc got %q", got)
	}
}
