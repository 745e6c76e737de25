// Package vmm is the seam between the microvm backend and the virtual
// machine monitors it can drive: a Driver turns one Config into a running VM,
// and a VM reports how it ended. Drivers live in subpackages (vmm/qemu,
// vmm/firecracker); the jail every VMM process runs in is vmm/jail, and the
// VM's network plumbing is sandbox/microvm/tap.
//
// The package holds types only. It must not depend on the control plane, the
// store, the node agent, the guest agent or any one driver.
package vmm
