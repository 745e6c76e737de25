package cli

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/internal/apitest"
)

// TestSuspendResumeVerbs drives cube suspend and cube resume against the
// real API server, with the test playing the node: each verb waits until
// the phase is reached and prints the name, --wait=false returns at once,
// a wait ends with the node's failure, and runc is refused.
func TestSuspendResumeVerbs(t *testing.T) {
	st, h, tok := apitest.Server(t, "acme")
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	cfg := &client.Config{}
	cfg.Upsert(client.Context{Name: "test", Server: hs.URL, Token: tok})
	if err := cfg.Save(cfgPath); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	insts := st.Instances()
	put := func(name, runtime string) {
		in := &v1.Instance{Metadata: v1.ObjectMeta{Name: name, Tenant: "acme", UID: name + "-uid"},
			Spec:   v1.InstanceSpec{Runtime: runtime, Containers: []v1.Container{{Name: "main", Image: "busybox"}}},
			Status: v1.InstanceStatus{Phase: v1.PhaseRunning, Node: "n1"}}
		in.SetDefaults()
		if err := insts.Create(ctx, insts.Key("acme", name), in); err != nil {
			t.Fatal(err)
		}
	}
	put("web", v1.RuntimeMicroVM)
	put("job", v1.RuntimeRunc)
	// node acts as the node would once the desired state is stored.
	node := func(wantSuspend bool, edit func(*v1.InstanceStatus)) {
		t.Helper()
		key := insts.Key("acme", "web")
		in, err := insts.Get(ctx, key)
		if err != nil {
			t.Error(err)
			return
		}
		// The change comes after this read: watch from its revision.
		rev, err := v1.ParseResourceVersion(in.Metadata.ResourceVersion)
		if err != nil {
			t.Error(err)
			return
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		for ch := insts.Watch(wctx, key, rev); in.Spec.Suspend != wantSuspend; {
			ev, ok := <-ch
			if !ok {
				t.Errorf("spec.suspend never became %v", wantSuspend)
				return
			}
			if ev.Object != nil {
				in = ev.Object
			}
		}
		if _, err := insts.Mutate(ctx, insts.Key("acme", "web"), func(in *v1.Instance) error { edit(&in.Status); return nil }); err != nil {
			t.Error(err)
		}
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		node(true, func(s *v1.InstanceStatus) { s.Phase = v1.PhaseSuspended })
	}()
	out, errOut, code := runCmd(t, newSuspendCmd, cfgPath, "", "web")
	<-done
	if code != 0 || out != "web\n" || !strings.Contains(errOut, "suspending web...") || !strings.Contains(errOut, "web suspended in") {
		t.Fatalf("cube suspend web: exit %d, stdout %q, stderr %q; want the name once Suspended", code, out, errOut)
	}
	ps, _, _ := runCmd(t, newPsCmd, cfgPath, "")
	if !strings.Contains(ps, "Suspended") {
		t.Errorf("cube ps:\n%s\nwant web Suspended", ps)
	}
	if _, errOut, code := runCmd(t, newSuspendCmd, cfgPath, "", "web"); code == 0 || !strings.Contains(errOut, "already Suspended") {
		t.Errorf("second suspend: exit %d, %q; want refused, saying it is suspended", code, errOut)
	}

	// --wait=false returns once asked; the wait then ends with the node's
	// failure rather than its timeout.
	out, _, code = runCmd(t, newResumeCmd, cfgPath, "", "--wait=false", "web")
	if in, _ := insts.Get(ctx, insts.Key("acme", "web")); code != 0 || out != "web\n" || in.Spec.Suspend {
		t.Fatalf("cube resume --wait=false: exit %d, %q, spec.suspend %v; want asked and returned", code, out, in.Spec.Suspend)
	}
	if ps, _, _ := runCmd(t, newPsCmd, cfgPath, ""); !strings.Contains(ps, "Suspended (resuming)") {
		t.Errorf("cube ps while resuming:\n%s", ps)
	}
	node(false, func(s *v1.InstanceStatus) {
		s.Reason, s.Message = v1.ReasonResumeFailed, "resume: saved state unreadable"
	})
	_, errOut, code = runCmd(t, newWaitCmd, cfgPath, "", "web", "--for", "running", "--timeout", "30s")
	if code != 1 || !strings.Contains(errOut, "ResumeFailed: resume: saved state unreadable") {
		t.Errorf("cube wait --for running after a failed resume: exit %d, %q; want 1 with the reason", code, errOut)
	}

	_, errOut, code = runCmd(t, newSuspendCmd, cfgPath, "", "job", "ghost")
	if code == 0 || !strings.Contains(errOut, "runtime runc cannot be suspended") || !strings.Contains(errOut, `"ghost" not found`) ||
		!strings.Contains(errOut, "could not suspend: job, ghost") {
		t.Errorf("cube suspend job ghost: exit %d, %q; want both refused, each saying why", code, errOut)
	}
}
