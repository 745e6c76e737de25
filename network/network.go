// Package network gives each instance its own network namespace and IP on a
// host bridge through CNI (libcni driving the standard plugins: bridge,
// host-local, portmap). It knows nothing of the API or the store; the node
// agent calls it around an instance's shim: Pin before launching it, Attach
// before any container starts, Teardown after removing it.
package network

import "context"

// PortMapping publishes a container port on the host.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"` // "tcp" (default) or "udp"
	HostIP        string `json:"hostIP,omitempty"`
}

// Attachment is the result of Attach (and Setup).
type Attachment struct {
	// NetNS is the path of the pinned network namespace, e.g.
	// /run/cube/netns/<id>; it stays until Teardown.
	NetNS string `json:"netns"`
	// IP is the instance's IPv4 address on the bridge (no prefix).
	IP string `json:"ip"`
	// The rest describe the interface CNI made in NetNS, which a VM's
	// guest repeats (sandbox.Interface).
	Interface string  `json:"interface,omitempty"` // its name, "eth0"
	MAC       string  `json:"mac,omitempty"`
	PrefixLen int     `json:"prefixLen,omitempty"` // of IP on the bridge's subnet
	Gateway   string  `json:"gateway,omitempty"`
	Routes    []Route `json:"routes,omitempty"`
	DNS       DNS     `json:"dns,omitzero"`
}

// Route is an IPv4 route CNI set in the namespace: Dst in CIDR form, via
// GW ("" for on-link).
type Route struct {
	Dst string `json:"dst"`
	GW  string `json:"gw,omitempty"`
}

// DNS is what CNI returned for the instance's resolver (often nothing:
// the node then uses its own resolv.conf).
type DNS struct {
	Nameservers []string `json:"nameservers,omitempty"`
	Search      []string `json:"search,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// Manager attaches and detaches instance sandboxes. Attaching is two
// steps, so a sandbox can be built against its namespace while CNI runs:
// Pin, then Attach. No container may start in the namespace before Attach
// returned.
type Manager interface {
	// Pin reserves the host ports of the mappings for id, records that
	// tenant owns it, and pins a new network namespace for it, with only
	// lo up, and returns its path, e.g. /run/cube/netns/<id>. Calling Pin
	// again for a pinned id returns the same path (and keeps the first
	// port mappings and tenant). A failed Pin leaves nothing behind. An
	// empty tenant is errdefs.ErrInvalid.
	Pin(ctx context.Context, id, tenant string, ports []PortMapping) (netns string, err error)
	// Attach runs CNI ADD on id's pinned namespace (veth on the bridge, IP,
	// port mappings), installs its packet filter, and returns the
	// attachment. From then on the instance sends only from its own IP
	// and MAC, exchanges packets only with instances of its own tenant,
	// and reaches no host address but through its published ports (see
	// filter.go). Calling Attach again for an attached id returns the
	// existing attachment. A failed Attach undoes its partial ADD and
	// leaves the pin for a retry or Teardown. It fails with
	// errdefs.ErrNotFound without a Pin first.
	Attach(ctx context.Context, id string) (Attachment, error)
	// Setup is Pin and Attach in one call. A failed Setup leaves nothing
	// behind.
	Setup(ctx context.Context, id, tenant string, ports []PortMapping) (Attachment, error)
	// Teardown runs CNI DEL, removes the instance's packet filter and
	// namespace and frees the IP and the host ports. It is idempotent: an
	// unknown id is not an error.
	Teardown(ctx context.Context, id string) error
	// List returns the ids with a pinned namespace or a state left by a
	// Pin or Attach that failed midway (for garbage collection after a
	// crash). A new Manager on the same state has already re-made the
	// packet filter of every attached id it lists, and dropped that of
	// every id it does not.
	List(ctx context.Context) ([]string, error)
}
