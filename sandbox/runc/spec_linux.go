package runc

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/sandbox"
)

// defaultPath is the PATH a container gets when its spec sets none (docker's).
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// cpuPeriod is the CFS period every container gets; the quota scales with it.
const cpuPeriod = 100000

// defaultCaps is docker's default capability set without CAP_NET_RAW:
// raw sockets let a tenant forge packets (ARP and IP spoofing, and SYNs to
// the host's 127.0.0.1 through a bridge with route_localnet, the
// CVE-2020-8558 class), and nothing a service needs requires them.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// maskedPaths and readonlyPaths are Docker's current defaults (a superset
// of runc's spec example): /proc/interrupts and each CPU's thermal_throttle
// were added for GHSA-6fw5-f8r9-fgfm, powercap for GHSA-jq35-85cj-fj4p
// (the Platypus power side channel).
var (
	maskedPaths = sync.OnceValue(func() []string {
		paths := []string{
			"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore",
			"/proc/keys", "/proc/latency_stats", "/proc/sched_debug",
			"/proc/scsi", "/proc/timer_list", "/proc/timer_stats",
			"/sys/devices/virtual/powercap", "/sys/firmware",
		}
		cpus, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*/thermal_throttle")
		return append(paths, cpus...)
	})
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// sharedFiles are the per-sandbox files and namespaces every container uses.
type sharedFiles struct {
	ipcNS, utsNS, netNS string // pinned namespace files
	hosts, hostname     string // /etc/hosts and /etc/hostname sources
	resolvConf          string // /etc/resolv.conf source
	shm                 string // tmpfs shared as every container's /dev/shm
}

// ociSpec builds the config.json of one container. memsw tells whether the
// kernel accounts swap (memory.memsw.*), so that swap can be capped at the
// memory limit.
func ociSpec(sb sandbox.Spec, c sandbox.ContainerSpec, f sharedFiles, memsw bool) (*specs.Spec, error) {
	uid, gid, err := sandbox.ParseUser(c.User, c.RootFS.Dir)
	if err != nil {
		return nil, err
	}
	caps := append([]string(nil), defaultCaps...)
	cwd := c.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	s := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			User: specs.User{UID: uid, GID: gid},
			Args: c.Args,
			Env:  containerEnv(sb, c.Env),
			Cwd:  cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits: []specs.POSIXRlimit{nofile()},
			// No setuid binary or file capability of the image raises
			// privileges; exec inherits this process spec.
			NoNewPrivileges: true,
		},
		Mounts: standardMounts(f),
		Linux: &specs.Linux{
			CgroupsPath: cgroupsPath(sb, c.Name),
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: f.netNS},
				{Type: specs.IPCNamespace, Path: f.ipcNS},
				{Type: specs.UTSNamespace, Path: f.utsNS},
			},
			// Without CAP_NET_RAW, ping needs ICMP datagram sockets, which
			// build their own headers and so cannot spoof (Docker's default
			// since it dropped CAP_NET_RAW). The value is per network
			// namespace: the instance's own.
			Sysctl:        map[string]string{"net.ipv4.ping_group_range": "0 2147483647"},
			Resources:     resources(c, memsw),
			MaskedPaths:   maskedPaths(),
			ReadonlyPaths: readonlyPaths,
		},
	}
	// Docker's default profile, tailored to the capability set (it lets
	// through the syscalls a granted capability covers, e.g. chroot for
	// CAP_SYS_CHROOT). runc applies the container's filter to every
	// `runc exec` too.
	sec, err := seccomp.GetDefaultProfile(s)
	if err != nil {
		return nil, fmt.Errorf("build the default seccomp profile: %w", err)
	}
	// Docker's profile also covers the x32 ABI on amd64. Without it the
	// filter runc compiles at every create and exec is a third smaller
	// (measured: 56 ms of CPU for runc run with it, 43 ms without, 30 ms
	// with no filter), and an x32 syscall kills the thread where it would
	// have been allowed: no image uses that ABI, and most kernels (this
	// one too) have it off. The i386 ABI keeps Docker's rules.
	sec.Architectures = slices.DeleteFunc(sec.Architectures, func(a specs.Arch) bool { return a == specs.ArchX32 })
	s.Linux.Seccomp = sec
	return s, nil
}

// execProcess is the process.json of `runc exec`: the container's user, cwd,
// capabilities and environment, overridden by the exec's own environment.
func execProcess(base *specs.Process, spec sandbox.ExecSpec) *specs.Process {
	p := *base
	p.Args = spec.Args
	p.Terminal = spec.TTY
	env := append([]string(nil), base.Env...)
	if spec.TTY {
		env = sandbox.MergeEnv(env, []string{"TERM=xterm"})
	}
	p.Env = sandbox.MergeEnv(env, spec.Env)
	return &p
}

// nofile is docker's and systemd's convention, 1024 soft and 524288 hard,
// capped by this process's own hard limit: raising it needs
// CAP_SYS_RESOURCE, which a shim may not have.
func nofile() specs.POSIXRlimit {
	l := specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 524288}
	var own unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &own) == nil && own.Max < l.Hard {
		l.Hard = own.Max
		l.Soft = min(l.Soft, l.Hard)
	}
	return l
}

func standardMounts(f sharedFiles) []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "bind", Source: f.shm, Options: []string{"rbind", "nosuid", "noexec", "nodev"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		{Destination: "/etc/hosts", Type: "bind", Source: f.hosts, Options: []string{"rbind", "rprivate"}},
		{Destination: "/etc/hostname", Type: "bind", Source: f.hostname, Options: []string{"rbind", "rprivate"}},
		{Destination: "/etc/resolv.conf", Type: "bind", Source: f.resolvConf, Options: []string{"rbind", "rprivate"}},
	}
}

func resources(c sandbox.ContainerSpec, memsw bool) *specs.LinuxResources {
	r := &specs.LinuxResources{
		// Deny every device; runc adds the standard allow-list (null, zero,
		// full, random, urandom, tty, ptmx, pts) itself.
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	if c.MilliCPU > 0 {
		// Shares only: the CFS quota is applied by Start between `runc
		// create` and `runc start` (see cpuQuota).
		shares := uint64(max(2, c.MilliCPU*1024/1000))
		r.CPU = &specs.LinuxCPU{Shares: &shares}
	}
	if c.MemoryBytes > 0 {
		limit := c.MemoryBytes
		r.Memory = &specs.LinuxMemory{Limit: &limit}
		if memsw {
			// memory+swap == memory: the container cannot swap, so the
			// limit is what triggers the OOM killer.
			swap := limit
			r.Memory.Swap = &swap
		}
	}
	return r
}

// cpuQuota returns the CFS quota of a container (0: none) for cpuPeriod.
//
// It is not in config.json, because runc writes a cgroup's resources while
// its own init (runc:[2:INIT], a Go program) is already in that cgroup and
// still has mounts, pivot_root and capabilities to do. With a small limit
// (10m is 1ms of CPU per 100ms) those few ms of runc's work are throttled
// into hundreds of ms of wall time. Start writes the quota once `runc
// create` returned, while the init waits to exec the container's command,
// so the command itself never runs without its limit. The init's last
// steps after `runc start` (about a ms of CPU) do run under it: at 10m
// that now and then costs `runc start` one period (100ms).
func cpuQuota(c sandbox.ContainerSpec) int64 {
	if c.MilliCPU <= 0 {
		return 0
	}
	return c.MilliCPU * cpuPeriod / 1000
}

// cgroupsPath is where the container's cgroup lives in every hierarchy.
func cgroupsPath(sb sandbox.Spec, name string) string {
	return strings.TrimSuffix(sb.CgroupParent, "/") + "/" + name
}

func containerEnv(sb sandbox.Spec, env []string) []string {
	base := []string{defaultPath}
	if sb.Hostname != "" {
		base = append(base, "HOSTNAME="+sb.Hostname)
	}
	return sandbox.MergeEnv(base, env)
}
