// Package cinit is a container's init in the guest (binary cmd/cube-init,
// static): PID 1 of the container's PID namespace, which the agent clones
// into fresh mount, PID and UTS namespaces. It builds the container's root
// (its /proc guarded, a minimal /dev, /sys read-only, the agent's /etc
// files) and pivots into it, then starts the container's main process and
// every exec from a thread whose capability bounding set is narrowed and
// which has no_new_privs, reaps the namespace's orphans, and reports exits
// to the agent over initproto.
//
// Pure Go cannot setns into a mount namespace once its runtime has
// threads, hence a process of its own. It runs at every container start,
// under TCG with every instruction emulated, so its start-up is on the
// critical path: it must depend only on the standard library, x/sys/unix
// and its own subpackages, never on protobuf, ttrpc, grpc, netlink, regexp
// or net (deps_test.go enforces it), nor on guest/agent or host-side Cube.
package cinit
