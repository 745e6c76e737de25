package apiserver

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

// listEvents answers GET /v1/events: the caller's events, oldest first,
// optionally only those of one instance (for=NAME) or of some types
// (types=Warning). With watch=true it streams them as they are recorded.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	if err := requireRole(r, store.RoleTenant); err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	events := s.store.Events()
	prefix := events.Prefix(callerFrom(r.Context()).Tenant)
	if name := q.Get("for"); name != "" {
		if err := v1.ValidateName("for", name); err != nil {
			writeError(w, err)
			return
		}
		prefix = events.Prefix(callerFrom(r.Context()).Tenant, name)
	}
	types := map[string]bool{}
	if t := q.Get("types"); t != "" {
		for _, typ := range strings.Split(t, ",") {
			switch {
			case strings.EqualFold(typ, v1.EventNormal):
				types[v1.EventNormal] = true
			case strings.EqualFold(typ, v1.EventWarning):
				types[v1.EventWarning] = true
			default:
				writeError(w, &v1.FieldError{Field: "types", Reason: fmt.Sprintf("%q is not an event type: want Normal or Warning", typ)})
				return
			}
		}
	}
	keep := func(e *v1.Event) bool { return len(types) == 0 || types[e.Type] }
	p, err := parsePaging(r, prefix)
	if err != nil {
		writeError(w, err)
		return
	}
	if q.Get("watch") == "true" {
		if p.from != "" {
			writeError(w, fmt.Errorf("%w: continue does not apply to watch=true: watch from the resourceVersion of the list instead", errdefs.ErrInvalid))
			return
		}
		r, release, err := s.openStream(r, "watch")
		if err != nil {
			writeError(w, err)
			return
		}
		defer release()
		streamWatch(w, r, events, prefix, func(ev store.Event[*v1.Event]) bool {
			// Events only come and expire: an expiry is not news.
			return ev.Type == v1.EventAdded && keep(ev.Object)
		})
		return
	}
	if p.paged {
		// Pages come in key order, /cube/events/<tenant>/<instance>/<revision>:
		// instance by instance, each in the order things happened.
		page, err := listPage(r, events, prefix, p, keep)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v1.List[*v1.Event]{Items: page.Items, ResourceVersion: fmt.Sprint(page.Revision), Continue: continueOf(page)})
		return
	}
	items, rev, err := events.List(r.Context(), prefix)
	if err != nil {
		writeError(w, err)
		return
	}
	out := v1.List[*v1.Event]{Items: []*v1.Event{}, ResourceVersion: fmt.Sprint(rev)}
	for _, e := range items {
		if keep(e) {
			out.Items = append(out.Items, e)
		}
	}
	sort.SliceStable(out.Items, func(i, j int) bool { return out.Items[i].Time.Before(out.Items[j].Time) })
	writeJSON(w, http.StatusOK, out)
}
