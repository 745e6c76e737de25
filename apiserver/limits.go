package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

// Request body limits per endpoint; past them the answer is 413. Image
// import has its own (in images.go).
const (
	// maxBody is the default, and the bound for instance specs and a
	// node's reports.
	maxBody = 1 << 20
	// maxSmallBody bounds tenants, tokens and heartbeats.
	maxSmallBody = 64 << 10
	// maxExecBody bounds an exec request (the command; stdin flows
	// after the upgrade).
	maxExecBody = 256 << 10
)

// limitBody bounds the body of every request h serves at n bytes.
func limitBody(n int64, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, n)
		h(w, r)
	}
}

// streamLimiter bounds each tenant's concurrent long-lived requests, so one
// tenant cannot hold the server's goroutines and etcd watchers.
type streamLimiter struct {
	max  int
	mu   sync.Mutex
	open map[string]int // tenant → open streams; protected by mu
}

func newStreamLimiter(max int) *streamLimiter {
	return &streamLimiter{max: max, open: map[string]int{}}
}

// acquire takes one stream slot of the caller's tenant; call release when
// the stream ends. Node agents are not bounded: they watch for the
// whole fleet.
func (l *streamLimiter) acquire(r *http.Request, what string) (release func(), err error) {
	c := callerFrom(r.Context())
	if c.Role == store.RoleNode {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[c.Tenant] >= l.max {
		return nil, fmt.Errorf("%w: tenant %s already has %d watches, waits, log follows and exec sessions open, the most allowed at once: end one before opening this %s", errdefs.ErrQuotaExceeded, c.Tenant, l.max, what)
	}
	l.open[c.Tenant]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.open[c.Tenant]--; l.open[c.Tenant] <= 0 {
				delete(l.open, c.Tenant)
			}
		})
	}, nil
}

// openStreams is how many streams tenant holds (for tests).
func (l *streamLimiter) openStreams(tenant string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[tenant]
}

// errTokenEnded is the cause of a stream's end when its token was revoked
// or expired while it was open.
var errTokenEnded = fmt.Errorf("%w: the token was revoked or expired while this stream was open: authenticate again with a valid token", errdefs.ErrUnauthorized)

// openStream takes a stream slot of the caller's tenant (see
// streamLimiter) and returns r with a context that ends, with cause
// errTokenEnded, when the caller's token is revoked or expires. Without
// that a revoked or expired token would keep every watch, wait, log
// follow and exec session it opened. Call release when the stream ends.
func (s *Server) openStream(r *http.Request, what string) (*http.Request, func(), error) {
	release, err := s.streams.acquire(r, what)
	if err != nil {
		return nil, nil, err
	}
	c := callerFrom(r.Context())
	ctx, cancel := context.WithCancelCause(r.Context())
	if !c.Expires.IsZero() {
		t := time.AfterFunc(c.Expires.Sub(s.cfg.Now()), func() { cancel(errTokenEnded) })
		context.AfterFunc(ctx, func() { t.Stop() })
	}
	if c.plain != "" {
		gone := s.store.TokenGone(ctx, c.plain)
		go func() {
			select {
			case <-gone:
				cancel(errTokenEnded)
			case <-ctx.Done():
			}
		}()
	}
	return r.WithContext(ctx), func() { cancel(nil); release() }, nil
}

// streamEnded is the error to answer with when a stream's context ended
// because its token did (nil otherwise).
func streamEnded(r *http.Request) error {
	if errors.Is(context.Cause(r.Context()), errTokenEnded) {
		return errTokenEnded
	}
	return nil
}
