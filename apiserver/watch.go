package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

// watchInstances streams one JSON event per line: first the current
// objects as ADDED (unless the client resumes from a resourceVersion), then
// every change.
func (s *Server) watchInstances(w http.ResponseWriter, r *http.Request, f filter) {
	r, release, err := s.openStream(r, "watch")
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	insts := s.store.Instances()
	prefix := s.listPrefix(r)
	streamWatch(w, r, insts, prefix, func(ev store.Event[*v1.Instance]) bool {
		// An object leaving the filter (e.g. rebound) is gone for this
		// watcher.
		return f.match(ev.Object)
	})
}

// streamWatch answers a watch request on the objects of coll under prefix
// that keep accepts: one JSON event per line, first the current objects as
// ADDED (unless the client resumes from a resourceVersion), then every
// change, until the client goes away.
func streamWatch[T any, P interface {
	*T
	v1.Object
}](w http.ResponseWriter, r *http.Request, coll store.Collection[T, P], prefix string, keep func(store.Event[P]) bool) {
	fl, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	var rev int64
	if rv := r.URL.Query().Get("resourceVersion"); rv != "" {
		n, err := strconv.ParseInt(rv, 10, 64)
		if err != nil {
			writeError(w, fmt.Errorf("%w: resourceVersion %q is not a number", errdefs.ErrInvalid, rv))
			return
		}
		rev = n
		w.Header().Set("Content-Type", "application/json-seq")
		w.WriteHeader(http.StatusOK)
	} else {
		items, lrev, err := coll.List(r.Context(), prefix)
		if err != nil {
			writeError(w, err)
			return
		}
		rev = lrev
		w.Header().Set("Content-Type", "application/json-seq")
		w.WriteHeader(http.StatusOK)
		for _, obj := range items {
			if keep(store.Event[P]{Type: v1.EventAdded, Object: obj}) {
				_ = enc.Encode(v1.WatchEvent[P]{Type: v1.EventAdded, Object: obj})
			}
		}
	}
	if fl != nil {
		fl.Flush()
	}
	for ev := range coll.Watch(r.Context(), prefix, rev) {
		if !keep(ev) {
			continue
		}
		if err := enc.Encode(v1.WatchEvent[P]{Type: ev.Type, Object: ev.Object}); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
}

// matchState reports whether an instance is in one of the wanted states;
// deleted matches nothing here (the object is gone).
func matchState(in *v1.Instance, states []string) bool {
	for _, st := range states {
		switch st {
		case "exited":
			if in.Status.Phase.Terminal() {
				return true
			}
		default:
			if strings.EqualFold(st, string(in.Status.Phase)) {
				return true
			}
		}
	}
	return false
}

var knownStates = map[string]bool{"pending": true, "scheduled": true, "creating": true, "running": true, "suspended": true, "succeeded": true, "failed": true, "exited": true, "deleted": true}

// waitInstance long-polls until the instance reaches a wanted state, ends
// (a terminal phase ends every wait), or the timeout passes (408 with the
// current object in the body).
func (s *Server) waitInstance(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	states := strings.Split(strings.ToLower(q.Get("state")), ",")
	wantDeleted := false
	for _, st := range states {
		if !knownStates[st] {
			writeError(w, fmt.Errorf("%w: state %q: want one or more of running, suspended, exited, deleted, pending, scheduled, creating, succeeded, failed", errdefs.ErrInvalid, st))
			return
		}
		wantDeleted = wantDeleted || st == "deleted"
	}
	timeout := 60 * time.Second
	if t := q.Get("timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 {
			writeError(w, fmt.Errorf("%w: timeout %q: want a duration such as 30s or 5m", errdefs.ErrInvalid, t))
			return
		}
		timeout = min(d, 10*time.Minute)
	}
	r, release, err := s.openStream(r, "wait")
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	in, err := s.lookupInstance(r)
	if err != nil {
		if wantDeleted && errors.Is(err, errdefs.ErrNotFound) {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeError(w, err)
		return
	}
	insts := s.store.Instances()
	key := insts.Key(in.Metadata.Tenant, in.Metadata.Name)
	// Watch from the revision of a fresh read, not the object's own: etcd
	// serves a watch that starts in the past from its resync loop, up to
	// 100 ms late, which every short wait would pay.
	cur, rev, err := insts.GetWithRevision(ctx, key)
	if errors.Is(err, errdefs.ErrNotFound) {
		if wantDeleted {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		err = fmt.Errorf("%w: instance %q was deleted", errdefs.ErrNotFound, in.Metadata.Name)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	in = cur
	events := insts.Watch(ctx, key, rev)
	for {
		if matchState(in, states) || (in.Status.Phase.Terminal() && !wantDeleted) || failedToward(in, states) {
			writeJSON(w, http.StatusOK, in)
			return
		}
		select {
		case ev, ok := <-events:
			if !ok {
				if err := streamEnded(r); err != nil {
					writeError(w, err)
					return
				}
				if r.Context().Err() != nil {
					return
				}
				w.Header().Set("Content-Type", "application/json")
				writeJSON(w, http.StatusRequestTimeout, v1.ErrorBody{Error: v1.ErrorDetail{
					Code:    "Timeout",
					Message: fmt.Sprintf("instance %q is still %s after %s%s", in.Metadata.Name, in.Status.Phase, timeout, reasonSuffix(in)),
				}})
				return
			}
			if ev.Object.Metadata.Name != in.Metadata.Name {
				continue // a key sharing the prefix
			}
			if ev.Type == v1.EventDeleted {
				if wantDeleted {
					w.WriteHeader(http.StatusNoContent)
					return
				}
				writeError(w, fmt.Errorf("%w: instance %q was deleted", errdefs.ErrNotFound, in.Metadata.Name))
				return
			}
			in = ev.Object
		}
	}
}

// failedToward reports whether the node's last attempt at the suspend or
// resume a wait is for failed: the wait ends with the reason rather than
// run out its time (the node tries again; a new wait follows it).
func failedToward(in *v1.Instance, states []string) bool {
	for _, st := range states {
		if st == "suspended" && in.Status.Reason == v1.ReasonSuspendFailed ||
			st == "running" && in.Status.Reason == v1.ReasonResumeFailed {
			return true
		}
	}
	return false
}

func reasonSuffix(in *v1.Instance) string {
	if in.Status.Reason == "" && in.Status.Message == "" {
		return ""
	}
	return fmt.Sprintf(" (%s: %s)", in.Status.Reason, in.Status.Message)
}
