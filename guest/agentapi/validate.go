package agentapi

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/cube-platform/cube/errdefs"
)

// Bounds of every message. Both sides enforce them: the agent on requests,
// the client on requests (early, with a clear error) and on responses.
const (
	MaxContainers  = 16
	MaxDrives      = MaxContainers + 2
	MaxRoutes      = 32
	MaxDNSServers  = 3 // resolv.conf's MAXNS
	MaxDNSSearch   = 6
	MaxDNSOptions  = 8
	MaxArgs        = 256
	MaxEnv         = 512
	MaxArgBytes    = 128 << 10 // all args (or all env) together
	MaxStringBytes = 4096      // one arg, env entry, cwd
	MaxGroups      = 32
	MaxChunk       = 64 << 10 // one WriteStdin or ReadOutput
	MaxExecs       = 64       // live execs per container
	MaxInfoBytes   = 256      // Hello's strings
	MaxErrorBytes  = 1024     // an error message the client passes on
	MaxPidsLimit   = 1 << 22
	// The host's entropy for Setup and Resume: 32 bytes (256 bits) are
	// what the kernel's CRNG needs to count as seeded; more than 256 is
	// no better and only costs the wire.
	MinEntropyBytes = 32
	MaxEntropyBytes = 256
)

// The shapes of names, as small byte loops rather than regexps: every
// start of the agent would otherwise compile them (validate_test.go holds
// the regexps they match exactly, and fuzzes the two against each other).
// Every class is ASCII, so a byte loop accepts what a rune loop would.

func lowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }
func alnum(c byte) bool      { return lowerAlnum(c) || 'A' <= c && c <= 'Z' }
func digit(c byte) bool      { return '0' <= c && c <= '9' }
func lowerHex(c byte) bool   { return digit(c) || 'a' <= c && c <= 'f' }

// all reports whether s is lo to hi bytes, each of class ok.
func all(s string, lo, hi int, ok func(byte) bool) bool {
	if len(s) < lo || len(s) > hi {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

// label reports whether s is 1 to max bytes of edge or inner, its first
// and last of edge.
func label(s string, max int, edge, inner func(byte) bool) bool {
	return len(s) > 0 && edge(s[0]) && edge(s[len(s)-1]) &&
		all(s, 1, max, func(c byte) bool { return edge(c) || inner(c) })
}

// validName: a container name is a DNS label, as in the API
// (^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$).
func validName(s string) bool {
	return label(s, 63, lowerAlnum, func(c byte) bool { return c == '-' })
}

// validExecID: an exec id is chosen by the host
// (^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$).
func validExecID(s string) bool {
	return len(s) > 0 && alnum(s[0]) &&
		all(s, 1, 64, func(c byte) bool { return alnum(c) || c == '_' || c == '.' || c == '-' })
}

// validSerial: a drive serial fits virtio-blk's 20 bytes
// (^[A-Za-z0-9_-]{1,20}$).
func validSerial(s string) bool {
	return all(s, 1, 20, func(c byte) bool { return alnum(c) || c == '_' || c == '-' })
}

// validHostname: ^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$.
func validHostname(s string) bool {
	return label(s, 63, alnum, func(c byte) bool { return c == '.' || c == '-' })
}

// validMAC: lowercase aa:bb:cc:dd:ee:ff (^[0-9a-f]{2}(:[0-9a-f]{2}){5}$).
func validMAC(s string) bool {
	if len(s) != 17 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if i%3 == 2 {
			if s[i] != ':' {
				return false
			}
		} else if !lowerHex(s[i]) {
			return false
		}
	}
	return true
}

// validSearch: a DNS search domain (^[A-Za-z0-9.-]{1,253}$).
func validSearch(s string) bool {
	return all(s, 1, 253, func(c byte) bool { return alnum(c) || c == '.' || c == '-' })
}

// validOption: a resolv.conf option like ndots:5
// (^[a-z0-9-]{1,32}(:[0-9]{1,4})?$).
func validOption(s string) bool {
	k, v, colon := strings.Cut(s, ":")
	if !all(k, 1, 32, func(c byte) bool { return lowerAlnum(c) || c == '-' }) {
		return false
	}
	return !colon || all(v, 1, 4, digit)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errdefs.ErrInvalid, fmt.Sprintf(format, args...))
}

// ValidName reports whether s is a valid container name.
func ValidName(s string) bool { return validName(s) }

// Validate checks a process reference; exec_id "" names the container's
// main process.
func (r *ProcessRef) Validate() error {
	if r == nil {
		return invalid("no process named")
	}
	if !validName(r.GetContainer()) {
		return invalid("container name %q is not a DNS label", clip(r.GetContainer()))
	}
	if r.GetExecId() != "" && !validExecID(r.GetExecId()) {
		return invalid("exec id %q must be 1-64 of [A-Za-z0-9_.-]", clip(r.GetExecId()))
	}
	return nil
}

// Validate checks a Setup request's bounds and shape (not whether its
// drives exist: the agent does that).
func (r *SetupRequest) Validate() error {
	if err := validateEntropy(r.GetEntropy()); err != nil {
		return err
	}
	if r.GetHostname() != "" && !validHostname(r.GetHostname()) {
		return invalid("hostname %q is not a valid host name", clip(r.GetHostname()))
	}
	if err := r.GetNetwork().validate(); err != nil {
		return err
	}
	if n := len(r.GetDrives()); n > MaxDrives {
		return invalid("%d drives, at most %d", n, MaxDrives)
	}
	drives := map[string]DriveRole{}
	writable := 0
	for _, d := range r.GetDrives() {
		if !validSerial(d.GetSerial()) {
			return invalid("drive serial %q must be 1-20 of [A-Za-z0-9_-]", clip(d.GetSerial()))
		}
		if _, dup := drives[d.GetSerial()]; dup {
			return invalid("drive %q declared twice", d.GetSerial())
		}
		switch d.GetRole() {
		case DriveRole_DRIVE_ROLE_WRITABLE:
			writable++
			if d.GetFsType() != "ext4" {
				return invalid("writable drive %q: fs type %q, want ext4", d.GetSerial(), clip(d.GetFsType()))
			}
		case DriveRole_DRIVE_ROLE_IMAGE:
			if d.GetFsType() != "erofs" && d.GetFsType() != "ext4" {
				return invalid("image drive %q: fs type %q, want erofs or ext4", d.GetSerial(), clip(d.GetFsType()))
			}
		default:
			return invalid("drive %q has no role", d.GetSerial())
		}
		drives[d.GetSerial()] = d.GetRole()
	}
	if writable > 1 {
		return invalid("%d writable drives, at most 1", writable)
	}
	if l := r.GetPidsLimit(); l < 0 || l > MaxPidsLimit {
		return invalid("pids limit %d out of [0, %d]", l, MaxPidsLimit)
	}
	if n := len(r.GetContainers()); n == 0 || n > MaxContainers {
		return invalid("%d containers, want 1 to %d", n, MaxContainers)
	}
	names := map[string]bool{}
	for _, c := range r.GetContainers() {
		if err := c.validate(); err != nil {
			return err
		}
		if names[c.GetName()] {
			return invalid("container %q declared twice", c.GetName())
		}
		names[c.GetName()] = true
		if len(drives) > 0 || c.GetImageDrive() != "" {
			if drives[c.GetImageDrive()] != DriveRole_DRIVE_ROLE_IMAGE {
				return invalid("container %q: image drive %q is not a declared image drive", c.GetName(), clip(c.GetImageDrive()))
			}
		}
	}
	return nil
}

// validateEntropy: none, or MinEntropyBytes to MaxEntropyBytes.
func validateEntropy(b []byte) error {
	if n := len(b); n != 0 && (n < MinEntropyBytes || n > MaxEntropyBytes) {
		return invalid("entropy of %d bytes; want none or %d to %d", n, MinEntropyBytes, MaxEntropyBytes)
	}
	return nil
}

// Validate checks a Resume request: a clock to set is required (the
// guest's stopped at suspend), entropy is bounded as Setup's.
func (r *ResumeRequest) Validate() error {
	if err := validateEntropy(r.GetEntropy()); err != nil {
		return err
	}
	if r.GetTimeUnixNano() <= 0 {
		return invalid("time %d: want the host's clock in Unix ns", r.GetTimeUnixNano())
	}
	return nil
}

func (n *Network) validate() error {
	if n == nil {
		return nil
	}
	if n.GetMac() != "" && !validMAC(n.GetMac()) {
		return invalid("mac %q is not lowercase aa:bb:cc:dd:ee:ff", clip(n.GetMac()))
	}
	var prefix netip.Prefix
	if n.GetIpv4Cidr() != "" {
		p, err := netip.ParsePrefix(n.GetIpv4Cidr())
		if err != nil || !p.Addr().Is4() {
			return invalid("address %q is not an IPv4 CIDR like 10.88.0.5/24", clip(n.GetIpv4Cidr()))
		}
		prefix = p
	}
	if n.GetGateway() != "" {
		gw, err := netip.ParseAddr(n.GetGateway())
		if err != nil || !gw.Is4() {
			return invalid("gateway %q is not an IPv4 address", clip(n.GetGateway()))
		}
		if !prefix.IsValid() || !prefix.Masked().Contains(gw) {
			return invalid("gateway %s is outside eth0's subnet %q", gw, n.GetIpv4Cidr())
		}
	}
	if len(n.GetRoutes()) > MaxRoutes {
		return invalid("%d routes, at most %d", len(n.GetRoutes()), MaxRoutes)
	}
	for _, r := range n.GetRoutes() {
		if p, err := netip.ParsePrefix(r.GetDestination()); err != nil || !p.Addr().Is4() {
			return invalid("route destination %q is not an IPv4 CIDR", clip(r.GetDestination()))
		}
		if r.GetGateway() != "" {
			if a, err := netip.ParseAddr(r.GetGateway()); err != nil || !a.Is4() {
				return invalid("route gateway %q is not an IPv4 address", clip(r.GetGateway()))
			}
		}
	}
	if n.GetMtu() != 0 && (n.GetMtu() < 576 || n.GetMtu() > 65535) {
		return invalid("mtu %d out of [576, 65535]", n.GetMtu())
	}
	if len(n.GetDnsServers()) > MaxDNSServers {
		return invalid("%d DNS servers, at most %d", len(n.GetDnsServers()), MaxDNSServers)
	}
	for _, s := range n.GetDnsServers() {
		if _, err := netip.ParseAddr(s); err != nil {
			return invalid("DNS server %q is not an IP address", clip(s))
		}
	}
	if len(n.GetDnsSearch()) > MaxDNSSearch {
		return invalid("%d DNS search domains, at most %d", len(n.GetDnsSearch()), MaxDNSSearch)
	}
	for _, s := range n.GetDnsSearch() {
		if !validSearch(s) {
			return invalid("DNS search domain %q is not a domain name", clip(s))
		}
	}
	if len(n.GetDnsOptions()) > MaxDNSOptions {
		return invalid("%d DNS options, at most %d", len(n.GetDnsOptions()), MaxDNSOptions)
	}
	for _, s := range n.GetDnsOptions() {
		if !validOption(s) {
			return invalid("DNS option %q is not like ndots:5", clip(s))
		}
	}
	return nil
}

func (c *ContainerSpec) validate() error {
	if !validName(c.GetName()) {
		return invalid("container name %q is not a DNS label", clip(c.GetName()))
	}
	if err := validateCommand(c.GetArgs(), c.GetEnv(), c.GetCwd()); err != nil {
		return fmt.Errorf("container %q: %w", c.GetName(), err)
	}
	if len(c.GetAdditionalGids()) > MaxGroups {
		return invalid("container %q: %d groups, at most %d", c.GetName(), len(c.GetAdditionalGids()), MaxGroups)
	}
	if m := c.GetMemoryBytes(); m < 0 || (m > 0 && m < 4<<20) {
		return invalid("container %q: memory %d bytes, want 0 (unlimited) or at least 4 MiB", c.GetName(), m)
	}
	if cpu := c.GetCpuMillis(); cpu < 0 || cpu > 1<<20 {
		return invalid("container %q: cpu %d millis out of range", c.GetName(), cpu)
	}
	return nil
}

// validateCommand bounds a process's argv, environment and cwd.
func validateCommand(args, env []string, cwd string) error {
	if len(args) == 0 || args[0] == "" {
		return invalid("no command to run")
	}
	if len(args) > MaxArgs {
		return invalid("%d args, at most %d", len(args), MaxArgs)
	}
	if len(env) > MaxEnv {
		return invalid("%d env entries, at most %d", len(env), MaxEnv)
	}
	total := 0
	for _, a := range args {
		if err := checkString("arg", a); err != nil {
			return err
		}
		total += len(a)
	}
	if total > MaxArgBytes {
		return invalid("args total %d bytes, at most %d", total, MaxArgBytes)
	}
	total = 0
	for _, e := range env {
		if err := checkString("env entry", e); err != nil {
			return err
		}
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return invalid("env entry %q is not KEY=VALUE", clip(e))
		}
		total += len(e)
	}
	if total > MaxArgBytes {
		return invalid("env total %d bytes, at most %d", total, MaxArgBytes)
	}
	if cwd != "" {
		if err := checkString("cwd", cwd); err != nil {
			return err
		}
		if !strings.HasPrefix(cwd, "/") {
			return invalid("cwd %q is not absolute", clip(cwd))
		}
	}
	return nil
}

func checkString(what, s string) error {
	if len(s) > MaxStringBytes {
		return invalid("%s of %d bytes, at most %d", what, len(s), MaxStringBytes)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return invalid("%s %q holds a NUL byte", what, clip(s))
	}
	return nil
}

// Validate checks an exec request's bounds.
func (r *ExecRequest) Validate() error {
	if err := r.GetProcess().Validate(); err != nil {
		return err
	}
	if r.GetProcess().GetExecId() == "" {
		return invalid("an exec needs an exec id")
	}
	if err := validateCommand(r.GetArgs(), r.GetEnv(), r.GetCwd()); err != nil {
		return err
	}
	if r.GetRows() > 10000 || r.GetCols() > 10000 {
		return invalid("terminal size %dx%d too large", r.GetCols(), r.GetRows())
	}
	return nil
}

// Validate checks a WaitAny request: 1 to MaxContainers*(1+MaxExecs)
// valid, distinct processes.
func (r *WaitAnyRequest) Validate() error {
	n := len(r.GetProcesses())
	if n == 0 || n > MaxContainers*(1+MaxExecs) {
		return invalid("%d processes to wait for, want 1 to %d", n, MaxContainers*(1+MaxExecs))
	}
	seen := map[[2]string]bool{}
	for _, p := range r.GetProcesses() {
		if err := p.Validate(); err != nil {
			return err
		}
		k := [2]string{p.GetContainer(), p.GetExecId()}
		if seen[k] {
			return invalid("process %s/%s named twice", k[0], k[1])
		}
		seen[k] = true
	}
	return nil
}

// Validate checks a signal request.
func (r *SignalRequest) Validate() error {
	if err := r.GetProcess().Validate(); err != nil {
		return err
	}
	if s := r.GetSignal(); s <= 0 || s > 64 {
		return invalid("signal %d out of [1, 64]", s)
	}
	return nil
}

// Validate checks a stdin write.
func (r *WriteStdinRequest) Validate() error {
	if err := r.GetProcess().Validate(); err != nil {
		return err
	}
	if len(r.GetData()) > MaxChunk {
		return invalid("stdin write of %d bytes, at most %d", len(r.GetData()), MaxChunk)
	}
	return nil
}

// Validate checks an output read.
func (r *ReadOutputRequest) Validate() error {
	if err := r.GetProcess().Validate(); err != nil {
		return err
	}
	if r.GetStream() != Stream_STREAM_STDOUT && r.GetStream() != Stream_STREAM_STDERR {
		return invalid("stream %d is neither stdout nor stderr", r.GetStream())
	}
	if r.GetMaxBytes() == 0 || r.GetMaxBytes() > MaxChunk {
		return invalid("max bytes %d out of [1, %d]", r.GetMaxBytes(), MaxChunk)
	}
	return nil
}

// Validate checks a resize.
func (r *ResizePtyRequest) Validate() error {
	if err := r.GetProcess().Validate(); err != nil {
		return err
	}
	if r.GetRows() == 0 || r.GetCols() == 0 || r.GetRows() > 10000 || r.GetCols() > 10000 {
		return invalid("terminal size %dx%d out of [1, 10000]", r.GetCols(), r.GetRows())
	}
	return nil
}

// clip shortens s for an error message and makes it printable.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
