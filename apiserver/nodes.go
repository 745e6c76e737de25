package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

// AdminTenant may read cluster-wide objects (nodes).
const AdminTenant = "admin"

// NodeSecretHeader carries the secret a node agent registers; the server
// presents it back when it proxies logs and exec to that node.
const NodeSecretHeader = "X-Cube-Node-Secret"

// leaseTable remembers each node's etcd lease between heartbeats.
type leaseTable struct {
	mu     sync.Mutex
	leases map[string]int64 // protected by mu
}

func newLeaseTable() *leaseTable { return &leaseTable{leases: map[string]int64{}} }

func (s *Server) registerNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	c := callerFrom(r.Context())
	if c.Role != store.RoleNode || c.Node != name {
		writeError(w, fmt.Errorf("%w: only node %s's own token may register it", errdefs.ErrForbidden, name))
		return
	}
	var body v1.Node
	if err := decodeBody(r, &body); err != nil {
		writeError(w, err)
		return
	}
	if n := len(body.Status.Templates); n > v1.MaxNodeTemplates {
		writeError(w, fmt.Errorf("%w: status.templates: %d entries, at most %d", errdefs.ErrInvalid, n, v1.MaxNodeTemplates))
		return
	}
	if secret := r.Header.Get(NodeSecretHeader); secret != "" {
		if err := s.store.SetNodeSecret(r.Context(), name, secret); err != nil {
			writeError(w, err)
			return
		}
	}
	nodes := s.store.Nodes()
	key := nodes.Key(name)
	out, err := nodes.Mutate(r.Context(), key, func(n *v1.Node) error {
		n.Status.Capacity, n.Status.Address = body.Status.Capacity, body.Status.Address
		n.Status.Runtimes, n.Status.Accelerator, n.Status.GuestKernel = body.Status.Runtimes, body.Status.Accelerator, body.Status.GuestKernel
		n.Status.Images = body.Status.Images
		n.Status.Templates = body.Status.Templates
		// The node agent owns its labels and taints (set by its flags).
		n.Metadata.Labels, n.Spec.Taints = body.Metadata.Labels, body.Spec.Taints
		return nil
	})
	if errors.Is(err, errdefs.ErrNotFound) {
		body.APIVersion, body.Kind = v1.Version, "Node"
		body.Metadata = v1.ObjectMeta{Name: name, UID: newUID(), CreationTimestamp: s.cfg.Now().UTC(), Labels: body.Metadata.Labels}
		body.Spec = v1.NodeSpec{Taints: body.Spec.Taints}
		body.Status.Allocated, body.Status.Instances, body.Status.Ready = v1.Resources{}, 0, false
		err = nodes.Create(r.Context(), key, &body)
		out = &body
	}
	if err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("node registered", "node", name, "address", out.Status.Address)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	c := callerFrom(r.Context())
	if c.Role != store.RoleNode || c.Node != name {
		writeError(w, fmt.Errorf("%w: only node %s's own token may heartbeat for it", errdefs.ErrForbidden, name))
		return
	}
	s.leases.mu.Lock()
	prev := s.leases.leases[name]
	s.leases.mu.Unlock()
	id, err := s.store.Heartbeat(r.Context(), name, s.cfg.NodeTTL, prev, s.cfg.Now())
	if err != nil {
		writeError(w, err)
		return
	}
	s.leases.mu.Lock()
	s.leases.leases[name] = id
	s.leases.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func canReadNodes(r *http.Request) error {
	c := callerFrom(r.Context())
	if c.Role == store.RoleNode || c.Tenant == AdminTenant {
		return nil
	}
	return fmt.Errorf("%w: nodes are visible to the %s tenant only", errdefs.ErrForbidden, AdminTenant)
}

// NodeViews completes nodes with what the server derives: readiness from
// the lease, and allocation from the instances bound to each.
func NodeViews(nodes []*v1.Node, insts []*v1.Instance, alive map[string]time.Time) {
	type agg struct {
		cpu, mem int64
		n        int
	}
	byNode := map[string]*agg{}
	for _, in := range insts {
		if in.Status.Node == "" || in.Status.Phase.Terminal() {
			continue
		}
		a := byNode[in.Status.Node]
		if a == nil {
			a = &agg{}
			byNode[in.Status.Node] = a
		}
		cpu, mem := in.Requests()
		a.cpu, a.mem, a.n = a.cpu+cpu, a.mem+mem, a.n+1
	}
	for _, n := range nodes {
		a := byNode[n.Metadata.Name]
		if a == nil {
			a = &agg{}
		}
		n.Status.Allocated = v1.Resources{CPU: v1.FormatCPU(a.cpu), Memory: v1.FormatMemory(a.mem)}
		n.Status.Instances = a.n
		beat, ok := alive[n.Metadata.Name]
		n.Status.Ready = ok
		if ok {
			b := beat
			n.Status.LastHeartbeat = &b
		}
	}
}

func (s *Server) nodeViews(r *http.Request) ([]*v1.Node, string, error) {
	nodes, rev, err := s.store.Nodes().List(r.Context(), s.store.Nodes().Prefix())
	if err != nil {
		return nil, "", err
	}
	insts, _, err := s.store.Instances().List(r.Context(), s.store.Instances().Prefix())
	if err != nil {
		return nil, "", err
	}
	alive, err := s.store.AliveNodes(r.Context())
	if err != nil {
		return nil, "", err
	}
	NodeViews(nodes, insts, alive)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Metadata.Name < nodes[j].Metadata.Name })
	return nodes, fmt.Sprint(rev), nil
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	if err := canReadNodes(r); err != nil {
		writeError(w, err)
		return
	}
	p, err := parsePaging(r, s.store.Nodes().Prefix())
	if err != nil {
		writeError(w, err)
		return
	}
	if p.paged {
		s.listNodesPage(w, r, p)
		return
	}
	nodes, rev, err := s.nodeViews(r)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v1.List[*v1.Node]{Items: nodes, ResourceVersion: rev})
}

// listNodesPage answers one page of nodes (in name order: the keys are
// /cube/nodes/<name>). Allocation is derived from the instances of the
// same snapshot; readiness from the leases as they are now.
func (s *Server) listNodesPage(w http.ResponseWriter, r *http.Request, p paging) {
	page, err := listPage(r, s.store.Nodes(), s.store.Nodes().Prefix(), p, nil)
	if err != nil {
		writeError(w, err)
		return
	}
	insts, err := listPage(r, s.store.Instances(), s.store.Instances().Prefix(), paging{rev: page.Revision}, nil)
	if err != nil {
		writeError(w, err)
		return
	}
	alive, err := s.store.AliveNodes(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	NodeViews(page.Items, insts.Items, alive)
	writeJSON(w, http.StatusOK, v1.List[*v1.Node]{Items: page.Items, ResourceVersion: fmt.Sprint(page.Revision), Continue: continueOf(page)})
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) {
	if err := canReadNodes(r); err != nil {
		writeError(w, err)
		return
	}
	nodes, _, err := s.nodeViews(r)
	if err != nil {
		writeError(w, err)
		return
	}
	for _, n := range nodes {
		if n.Metadata.Name == r.PathValue("name") {
			writeJSON(w, http.StatusOK, n)
			return
		}
	}
	writeError(w, fmt.Errorf("%w: node %q not found", errdefs.ErrNotFound, r.PathValue("name")))
}

// mergeNodeReport applies a node's status report (body) to the stored
// instance (cur) that node reported for. The node owns only what it sees:
// the phase as its shim reports it, the IP, the containers, the creating,
// running and finished timestamps, and its reason and message. The
// scheduler's fields (node binding, scheduledAt, preemption) stay as
// stored, whatever the report holds. A report names the resourceVersion
// it was computed from; when the instance changed since, the report is
// refused (ErrConflict), and the node reads it again and reports anew.
// A report without one is merged as it is (still only node-owned fields).
func mergeNodeReport(cur, body *v1.Instance, node string) error {
	if cur.Status.Node != node || (body.Metadata.UID != "" && body.Metadata.UID != cur.Metadata.UID) {
		return fmt.Errorf("%w: instance %q is no longer bound to node %s", errdefs.ErrConflict, cur.Metadata.Name, node)
	}
	if rv := body.Metadata.ResourceVersion; rv != "" {
		got, err := v1.ParseResourceVersion(rv)
		if err != nil {
			return fmt.Errorf("%w: status report: %v", errdefs.ErrInvalid, err)
		}
		want, err := v1.ParseResourceVersion(cur.Metadata.ResourceVersion)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%w: status report of instance %q is based on resourceVersion %d, the instance is at %d: read it again and report", errdefs.ErrConflict, cur.Metadata.Name, got, want)
		}
	}
	st, rep := &cur.Status, body.Status
	st.Phase, st.IP, st.Accelerator, st.Containers = rep.Phase, rep.IP, rep.Accelerator, rep.Containers
	st.CreatingAt, st.RunningAt, st.FinishedAt = rep.CreatingAt, rep.RunningAt, rep.FinishedAt
	st.SuspendedAt, st.ResumedAt, st.SuspendedTotal = rep.SuspendedAt, rep.ResumedAt, rep.SuspendedTotal
	if rep.VMBoot != "" && rep.VMBoot != "template" && rep.VMBoot != "cold" || len(rep.VMBootWarning) > 256 {
		return fmt.Errorf("%w: status.vmBoot must be template or cold, and status.vmBootWarning at most 256 bytes", errdefs.ErrInvalid)
	}
	st.VMBoot, st.VMBootWarning = rep.VMBoot, rep.VMBootWarning
	st.Reason, st.Message = rep.Reason, rep.Message
	if p := st.Preemption; p != nil {
		// The preemption stays visible until the instance is gone.
		st.Reason, st.Message = "Preempted", p.Message
	}
	return nil
}
