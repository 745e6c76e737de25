package apiserver

import (
	"os"

	"context"
	"encoding/json"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/image/imagetest"
	"net/http"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
)

// TestRecreatedTenantInheritsNothing: the admin removes tenant acme and
// later creates a tenant acme again (another customer). Before, the new
// acme listed and ran the old one's images by name, read its events (the
// names and history of its instances), and saw its instances that were
// still stopping.
func TestRecreatedTenantInheritsNothing(t *testing.T) {
	ss := newSecServer(t, nil)
	ctx := context.Background()
	old := ss.tenant(v1.TenantRequest{Name: "acme"}) // records busybox for acme
	ss.must(http.StatusCreated, old, "POST", "/v1/instances", inst("web", nil))
	events := ss.st.Events()
	ev := &v1.Event{Metadata: v1.ObjectMeta{Name: "web.1", Tenant: "acme"}, Instance: "web", Type: v1.EventNormal, Reason: "Started", Message: "secret-project web", Time: ss.clock()}
	if err := events.Create(ctx, events.Key("acme", "web", "1"), ev); err != nil {
		t.Fatal(err)
	}
	// And owns an image's blobs in the image store.
	f, err := os.Open(imagetest.BuildBusybox(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	_, err = ss.srv.cfg.Images.Import(ctx, image.Owner{Tenant: "acme", Quota: 1 << 30}, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if used, _ := ss.srv.cfg.Images.Usage(ctx, "acme"); used == 0 {
		t.Fatal("the old acme's image usage is 0 after an import; the check below would prove nothing")
	}
	// Positive control: the old acme sees both.
	var before v1.List[*v1.Event]
	_ = json.Unmarshal(ss.must(http.StatusOK, old, "GET", "/v1/events", nil).body, &before)
	if len(before.Items) != 1 {
		t.Fatalf("old acme reads %d events; want 1", len(before.Items))
	}
	ss.must(http.StatusNoContent, ss.admin, "DELETE", "/v1/tenants/acme?force=true", nil)

	// An instance still stopping holds the name.
	insts := ss.st.Instances()
	stopping := inst("stopping", nil)
	stopping.Metadata.Tenant = "acme"
	now := time.Now()
	stopping.Metadata.DeletionTimestamp = &now
	if err := insts.Create(ctx, insts.Key("acme", "stopping"), stopping); err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, ss.do(ss.admin, "POST", "/v1/tenants", v1.TenantRequest{Name: "acme"}), http.StatusConflict, "", "still has 1 instances stopping")
	if err := insts.Delete(ctx, insts.Key("acme", "stopping"), ""); err != nil {
		t.Fatal(err)
	}

	var tt v1.TenantToken
	_ = json.Unmarshal(ss.must(http.StatusCreated, ss.admin, "POST", "/v1/tenants", v1.TenantRequest{Name: "acme"}).body, &tt)
	var imgs v1.List[*v1.Image]
	_ = json.Unmarshal(ss.must(http.StatusOK, tt.Token, "GET", "/v1/images", nil).body, &imgs)
	if len(imgs.Items) != 0 {
		t.Errorf("the new acme lists %d images of the old one; want none", len(imgs.Items))
	}
	var evs v1.List[*v1.Event]
	_ = json.Unmarshal(ss.must(http.StatusOK, tt.Token, "GET", "/v1/events", nil).body, &evs)
	if len(evs.Items) != 0 {
		t.Errorf("the new acme reads %d events of the old one; want none", len(evs.Items))
	}
	wantRefusal(t, ss.do(tt.Token, "POST", "/v1/instances", inst("run", nil)), http.StatusUnprocessableEntity, "spec.containers[0].image", "not found")
	// Nor does it own the old one's blobs in the image store.
	if used, err := ss.srv.cfg.Images.Usage(ctx, "acme"); err != nil || used != 0 {
		t.Errorf("the new acme's image usage = %d, %v; want 0 (the old one's blobs forgotten)", used, err)
	}
}
