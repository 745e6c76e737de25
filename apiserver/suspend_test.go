package apiserver

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/store"
)

// setStatus writes an instance's status as its node would have reported it.
func (ss *secServer) setStatus(tenant, name string, edit func(*v1.InstanceStatus)) {
	ss.t.Helper()
	insts := ss.st.Instances()
	if _, err := insts.Mutate(context.Background(), insts.Key(tenant, name), func(in *v1.Instance) error {
		edit(&in.Status)
		return nil
	}); err != nil {
		ss.t.Fatal(err)
	}
}

func (ss *secServer) stored(tenant, name string) *v1.Instance {
	ss.t.Helper()
	insts := ss.st.Instances()
	in, err := insts.Get(context.Background(), insts.Key(tenant, name))
	if err != nil {
		ss.t.Fatal(err)
	}
	return in
}

// TestSuspendResumeRoutes: suspend and resume record the desired state in
// the stored spec for the node to act on; the phase must allow it (409
// saying why), asking twice is a no-op, runc is refused with 400 naming
// spec.runtime, and a create cannot set the field.
func TestSuspendResumeRoutes(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("web", nil))
	if got := ss.stored("acme", "web").Spec.Runtime; got != v1.RuntimeMicroVM {
		t.Fatalf("acme's instance has runtime %q; want microvm", got)
	}

	wantRefusal(t, ss.do(acme, "POST", "/v1/instances/web/suspend", nil), http.StatusConflict, "",
		`instance "web" is Pending; only a Running instance can be suspended`)
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances/web/resume", nil), http.StatusConflict, "",
		`instance "web" is Pending; only a Suspended instance can be resumed`)

	ss.setStatus("acme", "web", func(st *v1.InstanceStatus) { st.Phase, st.Node = v1.PhaseRunning, "n1" })
	var out v1.Instance
	_ = json.Unmarshal(ss.must(http.StatusAccepted, acme, "POST", "/v1/instances/web/suspend", nil).body, &out)
	if !out.Spec.Suspend || !ss.stored("acme", "web").Spec.Suspend {
		t.Fatalf("after suspend: answer spec.suspend=%v, stored %v; want both true", out.Spec.Suspend, ss.stored("acme", "web").Spec.Suspend)
	}
	rv := ss.stored("acme", "web").Metadata.ResourceVersion
	ss.must(http.StatusAccepted, acme, "POST", "/v1/instances/web/suspend", nil) // asked again: nothing to write
	if got := ss.stored("acme", "web").Metadata.ResourceVersion; got != rv {
		t.Errorf("a second suspend wrote the instance (resourceVersion %s -> %s)", rv, got)
	}
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances/web/resume", nil), http.StatusConflict, "",
		`instance "web" is Running and being suspended`)

	ss.setStatus("acme", "web", func(st *v1.InstanceStatus) { st.Phase = v1.PhaseSuspended })
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances/web/suspend", nil), http.StatusConflict, "",
		"is already Suspended; `cube resume web` runs it again")
	out = v1.Instance{}
	_ = json.Unmarshal(ss.must(http.StatusAccepted, acme, "POST", "/v1/instances/web/resume", nil).body, &out)
	if out.Spec.Suspend || ss.stored("acme", "web").Spec.Suspend {
		t.Fatal("after resume spec.suspend is still true")
	}
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances/web/suspend", nil), http.StatusConflict, "",
		"is Suspended and being resumed")

	// A failed attempt's reason goes with the next request: the node
	// tries again and says what it finds.
	ss.setStatus("acme", "web", func(st *v1.InstanceStatus) {
		st.Phase, st.Reason, st.Message = v1.PhaseRunning, v1.ReasonSuspendFailed, "disk full"
	})
	ss.must(http.StatusAccepted, acme, "POST", "/v1/instances/web/suspend", nil)
	if st := ss.stored("acme", "web").Status; st.Reason != "" || st.Message != "" || st.Phase != v1.PhaseRunning {
		t.Errorf("status after a new suspend request = %+v; want Running without the old failure", st)
	}

	// runc keeps no whole state to save: 400 naming the field, for
	// every phase.
	ss.image(AdminTenant)
	ss.must(http.StatusCreated, ss.admin, "POST", "/v1/instances", inst("job", func(in *v1.Instance) { in.Spec.Runtime = v1.RuntimeRunc }))
	ss.setStatus(AdminTenant, "job", func(st *v1.InstanceStatus) { st.Phase, st.Node = v1.PhaseRunning, "n1" })
	for _, verb := range []string{"suspend", "resume"} {
		wantRefusal(t, ss.do(ss.admin, "POST", "/v1/instances/job/"+verb, nil), http.StatusBadRequest, "spec.runtime",
			"runtime runc cannot be suspended or resumed: only runtime microvm")
	}
	if ss.stored(AdminTenant, "job").Spec.Suspend {
		t.Error("a refused suspend of a runc instance was recorded")
	}

	wantRefusal(t, ss.do(acme, "POST", "/v1/instances", inst("born-asleep", func(in *v1.Instance) { in.Spec.Suspend = true })),
		http.StatusUnprocessableEntity, "spec.suspend", "an instance is created running")

	// A suspended instance is live: rm needs --force, which hands it to
	// its node's teardown (deletionTimestamp), and nothing can be
	// suspended or resumed while it goes.
	ss.setStatus("acme", "web", func(st *v1.InstanceStatus) { st.Phase = v1.PhaseSuspended })
	wantRefusal(t, ss.do(acme, "DELETE", "/v1/instances/web", nil), http.StatusConflict, "", "is Suspended; stop and remove it with `cube rm --force web`")
	if _, err := ss.st.Heartbeat(context.Background(), "n1", 30e9, 0, ss.clock()); err != nil {
		t.Fatal(err)
	}
	ss.must(http.StatusAccepted, acme, "DELETE", "/v1/instances/web?force=true", nil)
	wantRefusal(t, ss.do(acme, "POST", "/v1/instances/web/resume", nil), http.StatusConflict, "", `instance "web" is being removed`)
}

// TestSuspendIsTenantScoped: another tenant's suspend or resume of an
// instance is the same 404 as for a name nobody has, and changes nothing;
// read-only and node tokens may not ask at all.
func TestSuspendIsTenantScoped(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	evil := ss.tenant(v1.TenantRequest{Name: "evil"})
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("web", nil))
	ss.setStatus("acme", "web", func(st *v1.InstanceStatus) { st.Phase, st.Node = v1.PhaseRunning, "n1" })
	rv := ss.stored("acme", "web").Metadata.ResourceVersion

	for _, verb := range []string{"suspend", "resume"} {
		theirs := ss.do(evil, "POST", "/v1/instances/web/"+verb, nil)
		nobodys := ss.do(evil, "POST", "/v1/instances/ghost/"+verb, nil)
		if theirs.code != http.StatusNotFound || theirs.err != (v1.ErrorDetail{Code: "NotFound", Message: strings.ReplaceAll(nobodys.err.Message, "ghost", "web")}) {
			t.Errorf("evil's %s of acme's web = %s; want exactly the 404 of a missing name (%s)", verb, theirs, nobodys)
		}
		if strings.Contains(string(theirs.body), "acme") || strings.Contains(string(theirs.body), "Running") {
			t.Errorf("evil's %s answer tells of acme's instance: %s", verb, theirs)
		}
	}
	var ro v1.Token
	_ = json.Unmarshal(ss.must(http.StatusCreated, acme, "POST", "/v1/tokens", v1.TokenRequest{Scope: "read-only"}).body, &ro)
	wantRefusal(t, ss.do(ro.Token, "POST", "/v1/instances/web/suspend", nil), http.StatusForbidden, "", "read-only")
	node, err := ss.st.CreateToken(context.Background(), store.Token{Role: store.RoleNode, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, ss.do(node, "POST", "/v1/instances/web/suspend?tenant=acme", nil), http.StatusForbidden, "", "tenant tokens")
	if in := ss.stored("acme", "web"); in.Metadata.ResourceVersion != rv || in.Spec.Suspend {
		t.Errorf("refused requests changed acme's instance: resourceVersion %s -> %s, suspend %v", rv, in.Metadata.ResourceVersion, in.Spec.Suspend)
	}
	// The owner's positive control.
	ss.must(http.StatusAccepted, acme, "POST", "/v1/instances/web/suspend", nil)
}

// TestWaitForSuspended: a wait for suspended ends when the node reports
// it, and ends early, with the reason, when the node's attempt failed.
func TestWaitForSuspended(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("web", nil))
	ss.setStatus("acme", "web", func(st *v1.InstanceStatus) {
		st.Phase, st.Node, st.Reason, st.Message = v1.PhaseRunning, "n1", v1.ReasonSuspendFailed, "migrate: no space left on device"
	})
	var out v1.Instance
	_ = json.Unmarshal(ss.must(http.StatusOK, acme, "GET", "/v1/instances/web/wait?state=suspended&timeout=30s", nil).body, &out)
	if out.Status.Reason != v1.ReasonSuspendFailed {
		t.Errorf("wait for suspended after a failure answered %+v; want the failure at once", out.Status)
	}
	ss.setStatus("acme", "web", func(st *v1.InstanceStatus) { st.Phase, st.Reason, st.Message = v1.PhaseSuspended, "", "" })
	_ = json.Unmarshal(ss.must(http.StatusOK, acme, "GET", "/v1/instances/web/wait?state=suspended&timeout=30s", nil).body, &out)
	if out.Status.Phase != v1.PhaseSuspended {
		t.Errorf("wait for suspended answered phase %s", out.Status.Phase)
	}
	r := ss.must(http.StatusRequestTimeout, acme, "GET", "/v1/instances/web/wait?state=running&timeout=10ms", nil)
	if !strings.Contains(r.err.Message, "is still Suspended") {
		t.Errorf("timed-out wait for running said %q", r.err.Message)
	}
}
