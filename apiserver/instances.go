package apiserver

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/store"
)

// decodeBody reads one JSON object: within the route's limitBody, and
// never more than maxBody.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return err
		}
		return fmt.Errorf("%w: request body is not a valid object: %v", errdefs.ErrInvalid, err)
	}
	return nil
}

func newUID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Server) createInstance(w http.ResponseWriter, r *http.Request) {
	if err := requireRole(r, store.RoleTenant); err != nil {
		writeError(w, err)
		return
	}
	tenant := callerFrom(r.Context()).Tenant
	var in v1.Instance
	if err := decodeBody(r, &in); err != nil {
		writeError(w, err)
		return
	}
	in.SetDefaults()
	if err := in.Validate(); err != nil {
		writeError(w, err)
		return
	}
	if in.Spec.Suspend {
		writeError(w, &v1.FieldError{Field: "spec.suspend", Reason: "an instance is created running: leave it out, and suspend the instance with `cube suspend " + in.Metadata.Name + "` once it is Running"})
		return
	}
	t, err := s.tenantRecord(r, tenant)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := checkGrants(t, &in); err != nil {
		writeError(w, err)
		return
	}
	if err := s.setRuntime(t, &in); err != nil {
		writeError(w, err)
		return
	}
	if err := s.checkHostPorts(tenant, &in); err != nil {
		writeError(w, err)
		return
	}
	for i := range in.Spec.Containers {
		if err := s.resolveImage(r, tenant, i, &in.Spec.Containers[i]); err != nil {
			writeError(w, err)
			return
		}
	}
	if r.URL.Query().Get("dryRun") == "true" {
		writeJSON(w, http.StatusOK, &in)
		return
	}
	now := s.cfg.Now().UTC()
	in.Metadata.Tenant = tenant
	in.Metadata.UID = newUID()
	in.Metadata.CreationTimestamp = now
	in.Metadata.DeletionTimestamp = nil
	in.Status = v1.InstanceStatus{Phase: v1.PhasePending}
	if err := s.admit(r.Context(), t, &in); err != nil {
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			err = fmt.Errorf("%w: instance %q already exists; pick another --name or remove it with `cube rm %s`", errdefs.ErrAlreadyExists, in.Metadata.Name, in.Metadata.Name)
		}
		writeError(w, err)
		return
	}
	s.log.Info("instance created", "tenant", tenant, "name", in.Metadata.Name)
	writeJSON(w, http.StatusCreated, &in)
}

// resolveImage pins a container's image reference to the digest the tenant
// has for it, so every node runs exactly what was admitted.
func (s *Server) resolveImage(r *http.Request, tenant string, i int, c *v1.Container) error {
	field := fmt.Sprintf("spec.containers[%d].image", i)
	ref, err := image.NormalizeRef(c.Image)
	if err != nil {
		return &v1.FieldError{Field: field, Reason: err.Error()}
	}
	imgs := s.store.Images()
	rec, err := imgs.Get(r.Context(), imgs.Key(tenant, imageKey(ref)))
	if errors.Is(err, errdefs.ErrNotFound) {
		return &v1.FieldError{Field: field, Reason: fmt.Sprintf("image %q not found: pull it with `cube image pull %s` or import it with `cube image import FILE.tar`", c.Image, c.Image)}
	}
	if err != nil {
		return err
	}
	c.ImageDigest = rec.Digest
	return nil
}

func (s *Server) getInstance(w http.ResponseWriter, r *http.Request) {
	in, err := s.lookupInstance(r)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

// lookupInstance finds the named instance of the caller's tenant. Another
// tenant's instance is indistinguishable from a missing one.
func (s *Server) lookupInstance(r *http.Request) (*v1.Instance, error) {
	tenant, err := tenantOf(r)
	if err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	insts := s.store.Instances()
	in, err := insts.Get(r.Context(), insts.Key(tenant, name))
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("%w: instance %q not found (list instances with `cube ps -a`)", errdefs.ErrNotFound, name)
	}
	if err != nil {
		return nil, err
	}
	c := callerFrom(r.Context())
	if c.Role == store.RoleNode && in.Status.Node != c.Node {
		return nil, fmt.Errorf("%w: instance %q not found on node %s", errdefs.ErrNotFound, name, c.Node)
	}
	return in, nil
}

// filter is a parsed labelSelector + fieldSelector.
type filter struct {
	labels map[string]string
	fields map[string]string
}

func parseSelector(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, term := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(term, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: selector term %q: want key=value", errdefs.ErrInvalid, term)
		}
		out[k] = strings.TrimSpace(strings.TrimPrefix(v, "="))
	}
	return out, nil
}

var instanceFields = map[string]func(*v1.Instance) string{
	"metadata.name": func(in *v1.Instance) string { return in.Metadata.Name },
	"status.phase":  func(in *v1.Instance) string { return string(in.Status.Phase) },
	"status.node":   func(in *v1.Instance) string { return in.Status.Node },
}

func parseFilter(r *http.Request) (filter, error) {
	var f filter
	var err error
	if f.labels, err = parseSelector(r.URL.Query().Get("labelSelector")); err != nil {
		return f, err
	}
	if f.fields, err = parseSelector(r.URL.Query().Get("fieldSelector")); err != nil {
		return f, err
	}
	for k := range f.fields {
		if instanceFields[k] == nil {
			return f, fmt.Errorf("%w: fieldSelector %q is not supported (use metadata.name, status.phase or status.node)", errdefs.ErrInvalid, k)
		}
	}
	c := callerFrom(r.Context())
	if c.Role == store.RoleNode {
		// A node sees only what is bound to it.
		f.fields["status.node"] = c.Node
	}
	return f, nil
}

func (f filter) match(in *v1.Instance) bool {
	for k, v := range f.labels {
		if in.Metadata.Labels[k] != v {
			return false
		}
	}
	for k, v := range f.fields {
		if instanceFields[k](in) != v {
			return false
		}
	}
	return true
}

func (s *Server) listPrefix(r *http.Request) string {
	insts := s.store.Instances()
	c := callerFrom(r.Context())
	if c.Role == store.RoleNode {
		return insts.Prefix()
	}
	return insts.Prefix(c.Tenant)
}

func (s *Server) listInstances(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r)
	if err != nil {
		writeError(w, err)
		return
	}
	prefix := s.listPrefix(r)
	p, err := parsePaging(r, prefix)
	if err != nil {
		writeError(w, err)
		return
	}
	if r.URL.Query().Get("watch") == "true" {
		if p.from != "" {
			writeError(w, fmt.Errorf("%w: continue does not apply to watch=true: watch from the resourceVersion of the list instead", errdefs.ErrInvalid))
			return
		}
		s.watchInstances(w, r, f)
		return
	}
	if p.paged {
		// Pages come in key order, /cube/instances/<tenant>/<name>: name
		// order within a tenant.
		page, err := listPage(r, s.store.Instances(), prefix, p, f.match)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v1.List[*v1.Instance]{Items: page.Items, ResourceVersion: fmt.Sprint(page.Revision), Continue: continueOf(page)})
		return
	}
	items, rev, err := s.store.Instances().List(r.Context(), prefix)
	if err != nil {
		writeError(w, err)
		return
	}
	out := v1.List[*v1.Instance]{Items: []*v1.Instance{}, ResourceVersion: fmt.Sprint(rev)}
	for _, in := range items {
		if f.match(in) {
			out.Items = append(out.Items, in)
		}
	}
	sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].Metadata.Name < out.Items[j].Metadata.Name })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteInstance(w http.ResponseWriter, r *http.Request) {
	in, err := s.lookupInstance(r)
	if err != nil {
		writeError(w, err)
		return
	}
	insts := s.store.Instances()
	key := insts.Key(in.Metadata.Tenant, in.Metadata.Name)
	c := callerFrom(r.Context())
	q := r.URL.Query()
	if c.Role == store.RoleNode {
		// The node finalizes a deletion once every trace is gone.
		if q.Get("finalize") != "true" || in.Metadata.DeletionTimestamp == nil {
			writeError(w, fmt.Errorf("%w: a node may only finalize a requested deletion", errdefs.ErrForbidden))
			return
		}
		if err := insts.Delete(r.Context(), key, ""); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	force := q.Get("force") == "true"
	live := in.Status.Node != "" && !in.Status.Phase.Terminal()
	if live && !force {
		writeError(w, fmt.Errorf("%w: instance %q is %s; stop and remove it with `cube rm --force %s`", errdefs.ErrConflict, in.Metadata.Name, in.Status.Phase, in.Metadata.Name))
		return
	}
	alive, err := s.store.AliveNodes(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	_, nodeAlive := alive[in.Status.Node]
	if in.Status.Node == "" || (force && !nodeAlive) {
		// Nothing runs anywhere (or its node is gone): remove at once.
		if err := insts.Delete(r.Context(), key, ""); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, in)
		return
	}
	now := s.cfg.Now().UTC()
	in, err = insts.Mutate(r.Context(), key, func(in *v1.Instance) error {
		if in.Metadata.DeletionTimestamp == nil {
			in.Metadata.DeletionTimestamp = &now
		}
		return nil
	})
	if err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("instance deletion requested", "tenant", in.Metadata.Tenant, "name", in.Metadata.Name, "node", in.Status.Node)
	writeJSON(w, http.StatusAccepted, in)
}

// updateInstanceStatus is the node agent's report. Only the node the
// instance is bound to may write it, and only the status.
func (s *Server) updateInstanceStatus(w http.ResponseWriter, r *http.Request) {
	if err := requireRole(r, store.RoleNode); err != nil {
		writeError(w, err)
		return
	}
	var body v1.Instance
	if err := decodeBody(r, &body); err != nil {
		writeError(w, err)
		return
	}
	cur, err := s.lookupInstance(r)
	if err != nil {
		writeError(w, err)
		return
	}
	insts := s.store.Instances()
	key := insts.Key(cur.Metadata.Tenant, cur.Metadata.Name)
	node := callerFrom(r.Context()).Node
	out, err := insts.Mutate(r.Context(), key, func(in *v1.Instance) error {
		return mergeNodeReport(in, &body, node)
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
