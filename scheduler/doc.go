// Package scheduler decides where instances run. Schedule(snapshot, queue,
// now) returns a Plan: bindings, preemptions and refusals with their reasons.
//
// Policy. Requests are taken band by band (system, production, batch,
// best-effort); within a band, always from the tenant with the smallest
// weighted dominant share (DRF over cpu and memory, updated after every
// placement and eviction of the call); within a tenant, oldest first. A
// request goes to the best-scoring feasible node (Scorer: bin-packing by
// default, spreading as an option, plus image locality and zone spreading
// of a service's replicas). A request of a band above best-effort that fits
// nowhere evicts the cheapest set of strictly-lower-band instances on one
// node: fewest victims, then lowest band, then youngest.
//
// Speed. Requests with the same selector and tolerations form an
// equivalence class that shares the static half of feasibility (a bitset
// over nodes), and a shape that fit nowhere is remembered as such for the
// rest of the call (only a preemption can make room, and only on its node).
// Nodes are indexed in a grid by free memory and free cpu (logarithmic
// steps), updated in place as placements happen; a request visits only the
// cells that can hold it, nearest its own corner first (tightest fit) or
// farthest (spreading), each cell from a rotating offset, and scores a
// bounded sample of the feasible nodes it meets. The scan goes on to every
// candidate node when the sample does not fill, so a scarce fit is never
// missed.
//
// The package must stay pure: no I/O, no store, no network, no logger, no
// clock of its own (time is a parameter) and no randomness that does not
// come from Config.Seed. The same snapshot, queue, time and config give the
// same plan. A separate applier re-checks each binding with Fits against the
// latest node state and commits it (compare on Node.Revision).
package scheduler
