package apiserver

import (
	"encoding/json"
	"net/http"
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
)

// TestRevokeTakesWhatTheTokenMinted: the holder of a leaked tenant token
// mints a second one (and that one a third) before the admin revokes the
// first. Before, the minted ones went on working until the first one's
// expiry, up to a year: revocation did not take the access away.
func TestRevokeTakesWhatTheTokenMinted(t *testing.T) {
	ss := newSecServer(t, nil)
	ss.tenant(v1.TenantRequest{Name: "acme"})
	mint := func(by string, req v1.TokenRequest) v1.Token {
		var tok v1.Token
		_ = json.Unmarshal(ss.must(http.StatusCreated, by, "POST", "/v1/tokens", req).body, &tok)
		return tok
	}
	leaked := mint(ss.admin, v1.TokenRequest{Tenant: "acme"})
	other := mint(ss.admin, v1.TokenRequest{Tenant: "acme"})
	child := mint(leaked.Token, v1.TokenRequest{})
	grandchild := mint(child.Token, v1.TokenRequest{Scope: "read-only"})
	sibling := mint(other.Token, v1.TokenRequest{})
	ss.must(http.StatusOK, grandchild.Token, "GET", "/v1/instances", nil)

	ss.must(http.StatusNoContent, ss.admin, "DELETE", "/v1/tokens/"+leaked.Metadata.Name, nil)
	for _, tok := range []v1.Token{leaked, child, grandchild} {
		wantRefusal(t, ss.do(tok.Token, "GET", "/v1/instances", nil), http.StatusUnauthorized, "", "not valid")
	}
	// Positive control: tokens minted otherwise keep working.
	for _, tok := range []v1.Token{other, sibling} {
		ss.must(http.StatusOK, tok.Token, "GET", "/v1/instances", nil)
	}
}
