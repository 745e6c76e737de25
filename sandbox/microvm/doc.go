// Package microvm is the sandbox backend that runs each instance, with all
// its containers, in one lightweight VM of its own: a QEMU microvm (see
// vmm/qemu) jailed as Firecracker's jailer does it, booting the Cube guest
// kernel (guest/kernel) with the Go guest agent as PID 1 of its initramfs
// (guest/agent), spoken to over ttRPC on a virtio-serial port
// (guest/agentapi). Each container image is a read-only block image
// shared by every VM of the node; the sandbox's writable layer is a sparse
// ext4 file (sandbox/disk) attached as a drive. The guest repeats the CNI
// interface of the instance's namespace (its MAC and address), reached
// through a tap with a tc redirect (microvm/tap), so the node's packet
// filter and port publishing treat a VM instance exactly like a runc one.
//
// The VMM is a child of the process that owns the sandbox (the shim), and
// dies with it. A VM that ends unasked (the VMM killed, a guest panic)
// ends its containers with ReasonVMMExited or ReasonGuestPanic; the next
// Start boots a new VM over the same writable layer.
package microvm
