// Package runc is the runc backend of sandbox.Sandbox: every container of an
// instance is a runc container, and the sandbox itself is "built-in infra"
// instead of a pause container: Create unshares one IPC and one UTS namespace
// (and a network namespace when the node did not hand one in), pins them by
// bind-mounting their nsfs files under StateDir, and every container's OCI
// config joins them by path while getting its own mount and PID namespace.
//
// Each container's root filesystem is an overlayfs whose lower layer is the
// shared read-only image and whose upper layer lives in StateDir, so files a
// container writes survive its restarts (like docker) but never reach the
// image. Resource limits are real cgroup limits; exit codes are reaped by the
// owning process, which therefore MUST be a child subreaper
// (prctl(PR_SET_CHILD_SUBREAPER)): New refuses to run otherwise.
//
// The package drives the runc binary only. It must not depend on the control
// plane, the store, the node agent or the shim; the shim drives it.
package runc
