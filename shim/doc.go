// Package shim is the per-instance supervisor: one `cube shim` process per
// instance owns the instance's sandbox (sandbox/runc today), starts its
// containers, restarts them by policy with back-off, writes their logs
// (internal/logfile) and serves a small HTTP API on a unix socket: state
// (long-poll), exec (upgraded to internal/stream frames), stop, shutdown.
//
// A shim is launched detached (own session) and outlives the node agent that
// launched it, even a kill -9 of it; it exits only on /shutdown (or SIGTERM
// from an operator). The node agent speaks to it through Client.
//
// The package must not talk to the control plane, the store or the image
// service: the node agent speaks for it. It depends only on sandbox (and a
// backend), internal/logfile, internal/stream and errdefs.
package shim
