package apiserver

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

const (
	// maxLimit caps ?limit=: a larger one is served as this many.
	maxLimit = 10000
	// A page examines at most scanFactor×limit stored objects (and at
	// least minScan), so a selector that matches little cannot turn one
	// request into a read of the whole prefix. Such a page holds fewer
	// than limit items, maybe none, and still has a continue token.
	scanFactor = 10
	minScan    = 1000
)

// continueToken is what ?continue= carries, as base64url(JSON). Clients
// treat it as opaque; the server trusts none of it: the key must lie under
// the caller's own prefix, and the revision is only ever read, never
// written.
type continueToken struct {
	// V is the token format.
	V int `json:"v"`
	// Rev is the etcd revision the first page read: every page reads it,
	// so the pages are one snapshot.
	Rev int64 `json:"rev"`
	// Key is the first etcd key of the next page.
	Key string `json:"key"`
}

const tokenVersion = 1

func encodeContinue(rev int64, key string) string {
	b, _ := json.Marshal(continueToken{V: tokenVersion, Rev: rev, Key: key})
	return base64.RawURLEncoding.EncodeToString(b)
}

// paging is a request's parsed limit and continue.
type paging struct {
	// paged is false when the request has neither: the whole list at once,
	// as before paging existed.
	paged bool
	limit int // 0: no limit (continue alone reads the rest)
	from  string
	rev   int64
}

// parsePaging reads ?limit= and ?continue= for a list of the keys under
// prefix (the caller's own prefix: a token for any other is refused).
func parsePaging(r *http.Request, prefix string) (paging, error) {
	q := r.URL.Query()
	var p paging
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return p, fmt.Errorf("%w: limit %q: want a whole number of at least 1", errdefs.ErrInvalid, s)
		}
		p.paged, p.limit = true, min(n, maxLimit)
	}
	if s := q.Get("continue"); s != "" {
		bad := fmt.Errorf("%w: continue is not a token this list gave out: pass back the exact \"continue\" value of the previous page, or list again without continue", errdefs.ErrInvalid)
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return p, bad
		}
		var tok continueToken
		if err := json.Unmarshal(b, &tok); err != nil || tok.V != tokenVersion || tok.Rev < 1 {
			return p, bad
		}
		// Tenant isolation: a token names an etcd key, so one minted for
		// another tenant (or another kind) must not page into its keys.
		if !strings.HasPrefix(tok.Key, prefix) {
			return p, bad
		}
		p.paged, p.from, p.rev = true, tok.Key, tok.Rev
	}
	return p, nil
}

// scanBudget bounds the keys one page examines.
func (p paging) scanBudget() int {
	if p.limit == 0 {
		return 0
	}
	return max(p.limit*scanFactor, minScan)
}

// continueOf is the token for the page after page ("" when it was the last).
func continueOf[P any](page store.Page[P]) string {
	if page.Next == "" {
		return ""
	}
	return encodeContinue(page.Revision, page.Next)
}

// pageError words a store error for a client that sent continue.
func pageError(err error) error {
	if errors.Is(err, errdefs.ErrExpired) {
		return fmt.Errorf("%w: the list changed too much; list again without continue (%v)", errdefs.ErrExpired, strings.TrimPrefix(err.Error(), errdefs.ErrExpired.Error()+": "))
	}
	if errors.Is(err, errdefs.ErrInvalid) {
		return fmt.Errorf("%w: continue token names a revision the store never had; list again without continue", errdefs.ErrInvalid)
	}
	return err
}

// listPage reads the page p selects from prefix.
func listPage[T any, P interface {
	*T
	v1.Object
}](r *http.Request, c store.Collection[T, P], prefix string, p paging, match func(P) bool) (store.Page[P], error) {
	page, err := c.ListPage(r.Context(), store.PageRequest[P]{
		Prefix: prefix, From: p.from, Revision: p.rev, Limit: p.limit, MaxScan: p.scanBudget(), Match: match,
	})
	if err != nil {
		return page, pageError(err)
	}
	return page, nil
}
