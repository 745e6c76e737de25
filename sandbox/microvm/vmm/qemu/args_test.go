package qemu

import (
	"net"
	"strings"
	"testing"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

func TestArgs(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:00:00:00:07")
	cfg := vmm.Config{
		ID: "x", Kernel: "/k", Initrd: "/i", Cmdline: "quiet", VCPUs: 2, MemoryMiB: 256,
		Drives: []vmm.Drive{{ID: "image", Path: "/a", ReadOnly: true}, {ID: "rw", Path: "/b"}},
		Net:    &vmm.NIC{Tap: "tap0", MAC: mac},
	}
	got := strings.Join(args(&cfg), " ")
	for _, want := range []string{
		"-M " + MachineOptions,
		"-accel tcg,tb-size=64 -cpu max",
		"-nodefaults -no-user-config -nographic -no-reboot -S",
		"-sandbox " + SandboxOptions,
		"-m 256M -smp 2",
		"-kernel /vm/vmlinux -append " + BaseCmdline + " quiet -initrd /vm/initrd",
		"-chardev socket,id=qmp,fd=3,server=on,wait=off -mon chardev=qmp,mode=control",
		"-device virtserialport,chardev=agent,name=cube.agent",
		"socket,id=agent,fd=4,server=on,wait=off",
		"-netdev tap,id=n0,fd=5 -device virtio-net-device,netdev=n0,mac=02:00:00:00:00:07",
		"-add-fd fd=6,set=1 -drive if=none,id=d0,node-name=r0,file=/dev/fdset/1,format=raw,readonly=on -device virtio-blk-device,drive=d0,serial=image",
		"-add-fd fd=7,set=2 -add-fd fd=8,set=2 -drive if=none,id=d1,node-name=r1,file=/dev/fdset/2,format=raw,readonly=off -device virtio-blk-device,drive=d1,serial=rw",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("args lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "/k") || strings.Contains(got, "/a ") {
		t.Errorf("args name a host path (the jail has none): %s", got)
	}

	cfg.Accel, cfg.Net, cfg.Drives = vmm.AccelKVM, nil, nil
	got = strings.Join(args(&cfg), " ")
	if !strings.Contains(got, "-accel kvm -cpu host") || strings.Contains(got, "netdev") || strings.Contains(got, "add-fd") {
		t.Errorf("kvm, no net, no drives: %s", got)
	}
}
