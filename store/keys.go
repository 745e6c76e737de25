package store

import (
	v1 "github.com/cube-platform/cube/api/v1"
)

// Instances are keyed /cube/instances/<tenant>/<name>.
func (s *Store) Instances() Collection[v1.Instance, *v1.Instance] {
	return Collection[v1.Instance, *v1.Instance]{cli: s.cli, prefix: "/cube/instances"}
}

// Events are keyed /cube/events/<tenant>/<instance>/<revision>, written
// with a lease so they expire.
func (s *Store) Events() Collection[v1.Event, *v1.Event] {
	return Collection[v1.Event, *v1.Event]{cli: s.cli, prefix: "/cube/events"}
}

// Nodes are keyed /cube/nodes/<name>.
func (s *Store) Nodes() Collection[v1.Node, *v1.Node] {
	return Collection[v1.Node, *v1.Node]{cli: s.cli, prefix: "/cube/nodes"}
}

// Images are keyed /cube/images/<tenant>/<escaped ref>.
func (s *Store) Images() Collection[v1.Image, *v1.Image] {
	return Collection[v1.Image, *v1.Image]{cli: s.cli, prefix: "/cube/images"}
}
