package apiserver

import (
	"net/http"
	"net/http/httptest"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
)

// BenchmarkAuthenticatedRequest is the price of reading the token on every
// request (no cache, so revocation holds at once): a GET of a missing
// instance is the token read plus one etcd read.
func BenchmarkAuthenticatedRequest(b *testing.B) {
	ss := newSecServer(b, nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	h := ss.srv.Handler()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest(http.MethodGet, "/v1/instances/none", nil)
		req.Header.Set("Authorization", "Bearer "+acme)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound {
			b.Fatalf("GET = %d", rec.Code)
		}
	}
}
