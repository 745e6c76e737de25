package agentapi

// ReadyMarker is the line the agent prints on the VM's console once it
// serves its port. A template is snapshotted on it, without a host ever
// connecting: a ttRPC server remembers the stream ids a client used, so
// a clone's host, whose first call is stream 1 again, must be the first
// client the guest's agent ever had.
const ReadyMarker = "cube-agent: ready"
