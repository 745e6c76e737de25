package apiserver

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
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
	if q.Get("watch") == "true" {
		streamWatch(w, r, events, prefix, func(ev store.Event[*v1.Event]) bool {
			// Events only come and expire: an expiry is not news.
			return ev.Type == v1.EventAdded && keep(ev.Object)
		})
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
