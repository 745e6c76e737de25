package firecracker

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// Firecracker needs its binary and a working KVM; the development and CI
// machines have neither (ENVIRONMENT.md: no Firecracker package, nested
// kvm_pvm), so only the machine-configuration generation is tested here.
// Booting a VM with this driver is untested until it runs on a KVM host.

func baseConfig() vmm.Config {
	mac, _ := net.ParseMAC("02:42:ac:11:00:02")
	return vmm.Config{
		ID: "sb-1", Kernel: "/k/vmlinux", Initrd: "/k/initrd", Cmdline: "quiet lpj=1",
		VCPUs: 2, MemoryMiB: 300,
		Drives: []vmm.Drive{
			{ID: "image", Path: "/img/erofs", ReadOnly: true},
			{ID: "rw", Path: "/state/rw.ext4"},
		},
		Net:         &vmm.NIC{NetNS: "/run/netns/sb-1", Tap: "tap0", MAC: mac},
		AgentSocket: "/state/agent.vsock",
		Accel:       vmm.AccelKVM,
		StateDir:    "/state",
		Jail:        vmm.JailConfig{UID: 200007, GID: 200007},
	}
}

func TestMachineConfig(t *testing.T) {
	c, err := MachineConfig(baseConfig(), Options{Binary: "/usr/bin/firecracker", JailerBinary: "/usr/bin/jailer"})
	if err != nil {
		t.Fatal(err)
	}
	if *c.MachineCfg.VcpuCount != 2 || *c.MachineCfg.MemSizeMib != 300 {
		t.Errorf("machine = %d vcpus, %d MiB; want 2, 300", *c.MachineCfg.VcpuCount, *c.MachineCfg.MemSizeMib)
	}
	if c.KernelImagePath != "/k/vmlinux" || c.InitrdPath != "/k/initrd" {
		t.Errorf("kernel, initrd = %q, %q", c.KernelImagePath, c.InitrdPath)
	}
	if !strings.HasPrefix(c.KernelArgs, BaseCmdline) || !strings.HasSuffix(c.KernelArgs, "quiet lpj=1") {
		t.Errorf("kernel args = %q; want base then the caller's", c.KernelArgs)
	}
	if len(c.Drives) != 2 || *c.Drives[0].DriveID != "image" || !*c.Drives[0].IsReadOnly ||
		*c.Drives[1].PathOnHost != "/state/rw.ext4" || *c.Drives[1].IsReadOnly || *c.Drives[0].IsRootDevice {
		t.Errorf("drives = %+v; want image (ro) then rw, neither root", c.Drives)
	}
	if len(c.VsockDevices) != 1 || c.VsockDevices[0].Path != "/state/agent.vsock" || c.VsockDevices[0].CID != AgentCID {
		t.Errorf("vsock = %+v; want the agent socket with cid %d", c.VsockDevices, AgentCID)
	}
	if c.NetNS != "/run/netns/sb-1" || len(c.NetworkInterfaces) != 1 ||
		c.NetworkInterfaces[0].StaticConfiguration.HostDevName != "tap0" ||
		c.NetworkInterfaces[0].StaticConfiguration.MacAddress != "02:42:ac:11:00:02" {
		t.Errorf("network = %q %+v", c.NetNS, c.NetworkInterfaces)
	}
	j := c.JailerCfg
	if j == nil || *j.UID != 200007 || *j.GID != 200007 || j.ID != "sb-1" || j.ExecFile != "/usr/bin/firecracker" || j.ChrootBaseDir != "/state" {
		t.Errorf("jailer = %+v; want uid/gid 200007, id sb-1, chroot under /state", j)
	}
	if !c.Seccomp.Enabled {
		t.Errorf("seccomp disabled; want firecracker's filter on")
	}
}

func TestMachineConfigRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*vmm.Config)
	}{
		{"tcg", func(c *vmm.Config) { c.Accel = vmm.AccelTCG }},
		{"root uid", func(c *vmm.Config) { c.Jail.UID = 0 }},
		{"no memory", func(c *vmm.Config) { c.MemoryMiB = 0 }},
		{"bad drive id", func(c *vmm.Config) { c.Drives[0].ID = "a b" }},
		{"multicast mac", func(c *vmm.Config) { c.Net.MAC = net.HardwareAddr{1, 0, 0, 0, 0, 1} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			tc.mod(&cfg)
			if _, err := MachineConfig(cfg, Options{Binary: "/usr/bin/firecracker"}); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("MachineConfig = %v; want ErrInvalid", err)
			}
		})
	}
}
