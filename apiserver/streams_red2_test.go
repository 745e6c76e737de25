package apiserver

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/store"
)

// watchNames opens a watch with token and returns the names of the
// objects it streams; the channel closes when the stream ends.
func watchNames(t *testing.T, url, token string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch %s = %d; want 200", url, resp.StatusCode)
	}
	out := make(chan string, 64)
	go func() {
		defer close(out)
		dec := json.NewDecoder(resp.Body)
		for {
			var ev struct {
				Object struct {
					Metadata v1.ObjectMeta `json:"metadata"`
				} `json:"object"`
			}
			if dec.Decode(&ev) != nil {
				return
			}
			out <- ev.Object.Metadata.Name
		}
	}()
	return out
}

// waitFor reads names until want arrives (true) or the stream ends (false).
func waitFor(t *testing.T, names <-chan string, want string) bool {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case n, ok := <-names:
			if !ok {
				return false
			}
			if n == want {
				return true
			}
		case <-deadline:
			t.Fatalf("no %q and no end of stream in 20s", want)
		}
	}
}

// endsWithout reads names until the stream ends, failing on forbidden.
func endsWithout(t *testing.T, names <-chan string, forbidden string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case n, ok := <-names:
			if !ok {
				return
			}
			if n == forbidden {
				t.Fatalf("a stream of a revoked or expired token received %q", n)
			}
		case <-deadline:
			t.Fatalf("the stream of a revoked or expired token is still open after 20s")
		}
	}
}

// TestRevokedTokenEndsOpenStreams: revoking a token ends the watches and
// waits it opened before. Otherwise a revoked (leaked) token keeps reading
// every change of its tenant, and keeps its exec sessions, for as long as
// it holds the connection open.
func TestRevokedTokenEndsOpenStreams(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	hs := httptest.NewServer(ss.srv.Handler())
	t.Cleanup(hs.Close)
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("web", nil))
	var leaked v1.Token
	_ = json.Unmarshal(ss.must(http.StatusCreated, ss.admin, "POST", "/v1/tokens", v1.TokenRequest{Tenant: "acme"}).body, &leaked)

	control := watchNames(t, hs.URL+"/v1/instances?watch=true", acme)
	insts := watchNames(t, hs.URL+"/v1/instances?watch=true", leaked.Token)
	events := watchNames(t, hs.URL+"/v1/events?watch=true", leaked.Token)
	if !waitFor(t, insts, "web") || !waitFor(t, control, "web") {
		t.Fatal("a watch ended before the revocation")
	}
	waitDone := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest("GET", hs.URL+"/v1/instances/web/wait?state=succeeded&timeout=5m", nil)
		req.Header.Set("Authorization", "Bearer "+leaked.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			close(waitDone)
			return
		}
		waitDone <- resp
	}()
	// The wait holds a slot once it is in; then revoke.
	for deadline := time.Now().Add(10 * time.Second); ss.srv.streams.openStreams("acme") < 4; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("acme holds %d streams; want 4", ss.srv.streams.openStreams("acme"))
		}
	}
	ss.must(http.StatusNoContent, ss.admin, "DELETE", "/v1/tokens/"+leaked.Metadata.Name, nil)
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("after", nil))

	if !waitFor(t, control, "after") {
		t.Fatal("the valid token's watch ended; want it open and seeing \"after\"")
	}
	endsWithout(t, insts, "after")
	endsWithout(t, events, "after")
	select {
	case resp, ok := <-waitDone:
		if !ok {
			t.Fatal("the revoked token's wait failed without an answer")
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "revoked or expired") {
			t.Errorf("the revoked token's wait = %d %s; want 401 saying it was revoked", resp.StatusCode, body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the revoked token's wait is still open 20s after the revocation")
	}
}

// TestExpiredTokenEndsOpenStreams: a watch opened shortly before the
// token expires ends when it expires.
func TestExpiredTokenEndsOpenStreams(t *testing.T) {
	ss := newSecServer(t, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	hs := httptest.NewServer(ss.srv.Handler())
	t.Cleanup(hs.Close)
	short, err := ss.st.CreateToken(context.Background(), store.Token{Tenant: "acme", Role: store.RoleTenant, Scope: store.ScopeTenant,
		Expires: ss.clock().Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	control := watchNames(t, hs.URL+"/v1/instances?watch=true", acme)
	w := watchNames(t, hs.URL+"/v1/instances?watch=true", short)
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("before", nil))
	if !waitFor(t, w, "before") {
		t.Fatal("the watch ended before its token expired")
	}
	// The expiry is one second away: the stream must end then.
	endsWithout(t, w, "never")
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("after", nil))
	if !waitFor(t, control, "after") {
		t.Fatal("the valid token's watch ended")
	}
}
