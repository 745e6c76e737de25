// Package firecracker is the Firecracker driver of vmm.Driver, built on
// github.com/firecracker-microvm/firecracker-go-sdk. It turns the same
// vmm.Config the QEMU driver takes into the SDK's machine configuration:
// vCPUs and memory, virtio-blk drives (drive_id is the serial the guest
// finds them by), the tap (opened by Firecracker inside the instance's
// netns), a vsock device whose host unix socket is the agent channel, and
// Firecracker's own jailer with the VM's uid/gid.
//
// Firecracker needs a working KVM and its binary, neither of which the
// development machines have (ENVIRONMENT.md): only the configuration is
// tested here. The package must not depend on the control plane, the
// store or the node agent.
package firecracker
