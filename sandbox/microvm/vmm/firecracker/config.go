package firecracker

import (
	"fmt"
	"path/filepath"
	"strings"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// BaseCmdline precedes the caller's kernel command line: the console on
// ttyS0, a keyboard-controller reset (Firecracker exits on it), a panic
// that resets at once, and no PCI probing (Firecracker has no PCI).
const BaseCmdline = "console=ttyS0 reboot=k panic=-1 pci=off"

// AgentCID is the guest's vsock context id; the agent listens on
// AgentPort, and the host reaches it through the vsock device's unix
// socket with Firecracker's "CONNECT <port>\n" handshake.
const (
	AgentCID  = 3
	AgentPort = 1024
)

// Options name the binaries.
type Options struct {
	// Binary is the firecracker executable.
	Binary string
	// JailerBinary is Firecracker's jailer; "" runs without it (tests).
	JailerBinary string
}

// MachineConfig builds the SDK configuration for cfg. With a jailer,
// every path is the host path the SDK links into the chroot
// (<StateDir>/firecracker/<ID>/root).
func MachineConfig(cfg vmm.Config, opts Options) (sdk.Config, error) {
	if err := cfg.Validate(); err != nil {
		return sdk.Config{}, err
	}
	if cfg.Accel == vmm.AccelTCG {
		return sdk.Config{}, fmt.Errorf("vm %s: firecracker runs on kvm only, not tcg: %w", cfg.ID, errdefs.ErrInvalid)
	}
	if opts.Binary == "" {
		return sdk.Config{}, fmt.Errorf("vm %s: no firecracker binary given: %w", cfg.ID, errdefs.ErrInvalid)
	}
	vcpus, mem := int64(cfg.VCPUs), int64(cfg.MemoryMiB)
	c := sdk.Config{
		VMID:            cfg.ID,
		SocketPath:      filepath.Join(cfg.StateDir, "firecracker.sock"),
		KernelImagePath: cfg.Kernel,
		InitrdPath:      cfg.Initrd,
		KernelArgs:      strings.TrimSpace(BaseCmdline + " " + cfg.Cmdline),
		MachineCfg: models.MachineConfiguration{
			VcpuCount:  sdk.Int64(vcpus),
			MemSizeMib: sdk.Int64(mem),
			Smt:        sdk.Bool(false),
		},
		VsockDevices: []sdk.VsockDevice{{ID: "agent", Path: cfg.AgentSocket, CID: AgentCID}},
		// The SDK's default: Firecracker's built-in seccomp filter.
		Seccomp: sdk.SeccompConfig{Enabled: true},
	}
	for _, d := range cfg.Drives {
		c.Drives = append(c.Drives, models.Drive{
			DriveID:      sdk.String(d.ID),
			PathOnHost:   sdk.String(d.Path),
			IsReadOnly:   sdk.Bool(d.ReadOnly),
			IsRootDevice: sdk.Bool(false),
		})
	}
	if n := cfg.Net; n != nil {
		c.NetNS = n.NetNS
		c.NetworkInterfaces = sdk.NetworkInterfaces{{
			StaticConfiguration: &sdk.StaticNetworkConfiguration{
				MacAddress:  n.MAC.String(),
				HostDevName: n.Tap,
			},
		}}
	}
	if opts.JailerBinary != "" {
		uid, gid := cfg.Jail.UID, cfg.Jail.GID
		c.JailerCfg = &sdk.JailerConfig{
			UID:            &uid,
			GID:            &gid,
			ID:             cfg.ID,
			NumaNode:       sdk.Int(0),
			ExecFile:       opts.Binary,
			JailerBinary:   opts.JailerBinary,
			ChrootBaseDir:  cfg.StateDir,
			ChrootStrategy: sdk.NewNaiveChrootStrategy(cfg.Kernel),
			CgroupVersion:  "1",
		}
	}
	return c, nil
}
