// Package agentapi is the ttRPC API between the shim (host) and the guest
// agent (guest/agent): the .proto, its generated Go (committed; see
// gen.go), the bounds every message must respect (Validate… in
// validate.go, checked by both sides) and Client, the host's side.
//
// The guest is hostile: Client checks every answer against bounds before
// returning it and never panics on what the wire carries. The agent is
// the other way round: it refuses any request that breaks the bounds or
// names what Setup did not declare.
//
// This package must not depend on the agent (guest/agent) nor on anything
// host-only in Cube beyond errdefs: the agent imports it too.
package agentapi
