package image

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image/imagetest"
)

// hostAddr returns a non-loopback address of this host, or skips.
func hostAddr(t *testing.T) netip.Addr {
	t.Helper()
	for _, a := range localAddrs() {
		if a.Is4() && !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			return a
		}
	}
	t.Skip("this host has no non-loopback IPv4 address to listen on")
	return netip.Addr{}
}

// listenOn starts h on addr:0 and returns host:port.
func listenOn(t *testing.T, addr string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h}}
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().String()
}

// TestPullGuard: a guarded pull may not reach loopback, link-local or this
// host's addresses, checked on the resolved address and on redirects, and
// may once the registry is allowed.
func TestPullGuard(t *testing.T) {
	reg := imagetest.StartRegistry(t) // 127.0.0.1:PORT
	imagetest.Push(t, imagetest.BusyboxImage(t), reg+"/cube/busybox:v1")
	_, port, _ := net.SplitHostPort(reg)

	var hostHits atomic.Int64
	onHost := listenOn(t, hostAddr(t).String(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hostHits.Add(1)
		http.NotFound(w, r)
	}))
	// An allowed front that redirects every request to the loopback
	// registry by another name.
	var redirects atomic.Int64
	redirector := listenOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirects.Add(1)
		http.Redirect(w, r, "http://localhost:"+port+r.URL.Path, http.StatusTemporaryRedirect)
	}))

	s := newStore(t)
	tests := []struct {
		name, ref string
		guard     *NetGuard
		want      []string
	}{
		{"loopback", reg + "/cube/busybox:v1", &NetGuard{}, []string{"loopback", "--registry-allow " + reg}},
		{"a name for loopback", "localhost:" + port + "/cube/busybox:v1", &NetGuard{}, []string{"loopback", "localhost:" + port}},
		{"link-local", "169.254.169.254:80/latest/meta:v1", &NetGuard{}, []string{"link-local"}},
		{"unspecified", "0.0.0.0:" + port + "/cube/busybox:v1", &NetGuard{}, []string{"unspecified"}},
		{"this host", onHost + "/cube/busybox:v1", &NetGuard{}, []string{"an address of this host"}},
		{"denied prefix", "10.213.0.7:5000/x:v1", &NetGuard{Deny: []netip.Prefix{netip.MustParsePrefix("10.213.0.0/16")}}, []string{"platform"}},
		{"redirect to loopback", redirector + "/cube/busybox:v1", &NetGuard{Allow: []string{redirector}}, []string{"loopback", "localhost:" + port}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Pull(t.Context(), ownerB, tt.ref, PullOptions{Insecure: true, Guard: tt.guard})
			wantErr(t, "Pull("+tt.ref+")", err, ErrRegistryRefused, tt.want...)
			wantErr(t, "Pull("+tt.ref+")", err, errdefs.ErrForbidden)
		})
	}
	if n := hostHits.Load(); n != 0 {
		t.Errorf("the server on this host's address got %d requests from a refused pull", n)
	}
	if redirects.Load() == 0 {
		t.Errorf("the redirector was never asked: the redirect case proved nothing")
	}

	// Allowed by the operator, the same pulls work.
	if _, err := s.Pull(t.Context(), ownerB, reg+"/cube/busybox:v1", PullOptions{Guard: &NetGuard{Allow: []string{reg}}}); err != nil {
		t.Errorf("Pull(allowed loopback registry) = %v; want it stored", err)
	}
	_, err := s.Pull(t.Context(), ownerB, onHost+"/cube/busybox:v1", PullOptions{Insecure: true, Guard: &NetGuard{Allow: []string{onHost}}})
	wantErr(t, "Pull(allowed host registry)", err, ErrNotFound)
	if hostHits.Load() == 0 {
		t.Errorf("the allowed pull never reached the server on this host's address")
	}
	// Unguarded (the admin), loopback is fine.
	if _, err := s.Pull(t.Context(), ownerA, reg+"/cube/busybox:v1", PullOptions{}); err != nil {
		t.Errorf("Pull(unguarded) = %v; want it stored", err)
	}
}

// TestPullErrorBody: what a registry answers never reaches the error: not
// an HTML page, not its JSON error messages.
func TestPullErrorBody(t *testing.T) {
	const marker = "SECRET-FROM-UPSTREAM"
	huge := "<html>" + strings.Repeat(marker+" ", 1<<16) + "</html>"
	for _, tt := range []struct {
		name   string
		status int
		body   string
	}{
		{"html 500", 500, huge},
		{"json 400", 400, fmt.Sprintf(`{"errors":[{"code":"DENIED","message":%q,"detail":%q}]}`, marker, marker)},
		{"json 404", 404, fmt.Sprintf(`{"errors":[{"code":"MANIFEST_UNKNOWN","message":%q}]}`, marker)},
		{"plain 502 on ping", 502, marker},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg := listenOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" && tt.name != "plain 502 on ping" {
					w.WriteHeader(200)
					return
				}
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			_, err := newStore(t).Pull(t.Context(), ownerB, reg+"/x/y:v1", PullOptions{Insecure: true, Guard: &NetGuard{Allow: []string{reg}}})
			if err == nil {
				t.Fatal("Pull() succeeded against a failing registry")
			}
			if strings.Contains(err.Error(), marker) || strings.Contains(err.Error(), "<html>") {
				t.Errorf("Pull() error echoes the registry's body: %.300s", err)
			}
			if !strings.Contains(err.Error(), reg) {
				t.Errorf("Pull() = %v; want it to name the registry %s", err, reg)
			}
			if tt.status >= 500 && !strings.Contains(err.Error(), fmt.Sprint(tt.status)) {
				t.Errorf("Pull() = %v; want it to give the status %d", err, tt.status)
			}
		})
	}
}

// TestPullManifestCap: a manifest over 4 MiB is refused, by its declared
// length or, streamed without one, at the cap: never read whole.
func TestPullManifestCap(t *testing.T) {
	const size = 64 << 20
	for _, declared := range []bool{true, false} {
		t.Run(fmt.Sprintf("declared=%v", declared), func(t *testing.T) {
			var sent atomic.Int64
			reg := listenOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" {
					w.WriteHeader(200)
					return
				}
				w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				if declared {
					w.Header().Set("Content-Length", fmt.Sprint(size))
				}
				if r.Method == http.MethodHead {
					return
				}
				chunk := []byte(strings.Repeat(" ", 64<<10))
				for sent.Load() < size {
					n, err := w.Write(chunk)
					sent.Add(int64(n))
					if err != nil {
						return
					}
				}
			}))
			_, err := newStore(t).Pull(t.Context(), ownerB, reg+"/x/big:v1", PullOptions{Insecure: true})
			if err == nil || !strings.Contains(err.Error(), "4.0 MiB") {
				t.Errorf("Pull(64 MiB manifest) = %v; want it refused at the 4 MiB cap", err)
			}
			if n := sent.Load(); n >= size {
				t.Errorf("the registry wrote all %d bytes of the manifest; want the pull to stop reading at the cap", n)
			}
		})
	}
}

// TestCappedBody: a body of exactly the cap passes, one byte more fails.
func TestCappedBody(t *testing.T) {
	for _, tt := range []struct {
		n  int
		ok bool
	}{{maxMetadataSize, true}, {maxMetadataSize + 1, false}, {0, true}} {
		b := &cappedBody{rc: io.NopCloser(strings.NewReader(strings.Repeat("x", tt.n))), left: maxMetadataSize, host: "r"}
		got, err := io.ReadAll(b)
		if (err == nil) != tt.ok || (tt.ok && len(got) != tt.n) {
			t.Errorf("read a %d-byte body: %d bytes, %v; want ok=%v", tt.n, len(got), err, tt.ok)
		}
	}
}
