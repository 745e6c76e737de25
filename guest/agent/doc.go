// Package agent is the guest agent: PID 1 of the microVM's initramfs
// (binary cmd/cube-agent, static). It mounts the VM's filesystems, serves
// the agentapi ttRPC service on the virtio-serial port "cube.agent", and
// runs the containers Setup declared, each in its own mount, PID, UTS and
// IPC namespace and cgroup, all sharing the VM's network namespace.
//
// Each container's PID 1 is cmd/cube-init (guest/cinit), a small static
// binary of its own at InitPath: pure Go cannot setns into a mount
// namespace once its runtime has threads, so the init, cloned into the
// namespaces, forks the container's process and every exec, reaps the
// container's orphans, and reports exits to the agent over a socketpair
// (guest/cinit/initproto). It does not pay for the agent's protobuf and
// ttRPC at every container start.
//
// The agent refuses every call that does not fit what Setup declared, and
// a second Setup (deny by default, as Kata's agent policy). It runs on a
// host too (tests): Config says what to skip when it is not PID 1.
//
// This package must not depend on host-side Cube packages (shim, node,
// sandbox): only on guest/agentapi, guest/cinit's initproto and reaper,
// and errdefs.
package agent
