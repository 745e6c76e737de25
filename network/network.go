// Package network gives each instance its own network namespace and IP on a
// host bridge through CNI (libcni driving the standard plugins: bridge,
// host-local, portmap). It knows nothing of the API or the store; the node
// agent calls it before starting an instance's shim and after removing it.
package network

import "context"

// PortMapping publishes a container port on the host.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"` // "tcp" (default) or "udp"
	HostIP        string `json:"hostIP,omitempty"`
}

// Attachment is the result of Setup.
type Attachment struct {
	// NetNS is the path of the pinned network namespace, e.g.
	// /run/cube/netns/<id>; it stays until Teardown.
	NetNS string `json:"netns"`
	// IP is the instance's IPv4 address on the bridge (no prefix).
	IP string `json:"ip"`
}

// Manager attaches and detaches instance sandboxes.
type Manager interface {
	// Setup pins a new network namespace for id, runs CNI ADD with the port
	// mappings, and returns it. Calling Setup again for an attached id
	// returns the existing attachment.
	Setup(ctx context.Context, id string, ports []PortMapping) (Attachment, error)
	// Teardown runs CNI DEL, removes the namespace and frees the IP. It is
	// idempotent: an unknown id is not an error.
	Teardown(ctx context.Context, id string) error
	// List returns the ids with a pinned namespace (for garbage collection
	// after a crash).
	List(ctx context.Context) ([]string, error)
}
