// Package qemu is the QEMU microvm driver of vmm.Driver: virtio-mmio
// devices on `-M microvm`, managed over QMP, with QEMU jailed by vmm/jail.
// It runs under TCG everywhere and under KVM where Probe shows KVM really
// runs a guest (never on /dev/kvm's mere existence).
//
// How the microvm backend drives one VM (the shim owns all of it):
//
//	uid, _ := jail.AllocateID(idsDir, id)              // one uid per VM
//	mac, _ := tap.Setup(netns, "eth0", "tap0")         // guest owns eth0's MAC
//	d, _ := qemu.New(qemu.Options{Logger: log})
//	d.Cleanup(ctx, cfg)                                 // leftovers of a dead shim
//	vm, _ := d.Start(ctx, cfg)                          // returns once QEMU runs the guest
//	conn, _ := net.Dial("unix", cfg.AgentSocket)        // ttRPC to the agent; boot deadline is the caller's
//	e := <-vm.Wait()                                    // Poweroff / GuestPanic / VMMExited / Stopped
//	vm.Stop(ctx); tap.Remove(netns, "eth0", "tap0"); jail.ReleaseID(idsDir, id)
//
// Everything QEMU needs beyond its jail root is opened here and handed over
// as a file descriptor: the QMP and agent sockets (already listening), the
// tap, and each drive (-add-fd into /dev/fdset). The console is a pipe the
// driver drains into a bounded tail and a capped log. QEMU's output is
// guest-influenced and parsed with bounds throughout.
//
// The package must not depend on the control plane, the store, the node
// agent or the guest agent's API.
package qemu
