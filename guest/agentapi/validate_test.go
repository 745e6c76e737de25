package agentapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/cube-platform/cube/errdefs"
)

func okSetup() *SetupRequest {
	return &SetupRequest{
		Hostname: "web",
		Network: &Network{Mac: "02:00:0a:58:00:05", Ipv4Cidr: "10.88.0.5/24", Gateway: "10.88.0.1",
			DnsServers: []string{"10.88.0.1"}, DnsSearch: []string{"svc.cube"}, DnsOptions: []string{"ndots:2"}},
		Drives: []*Drive{
			{Serial: "rw", Role: DriveRole_DRIVE_ROLE_WRITABLE, FsType: "ext4"},
			{Serial: "img0", Role: DriveRole_DRIVE_ROLE_IMAGE, FsType: "erofs"},
		},
		Containers: []*ContainerSpec{{Name: "app", ImageDrive: "img0", Args: []string{"sh"}, Env: []string{"A=b"}, Cwd: "/"}},
	}
}

func TestSetupValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*SetupRequest)
		ok     bool
	}{
		{"valid", func(*SetupRequest) {}, true},
		{"bad hostname", func(r *SetupRequest) { r.Hostname = "a b" }, false},
		{"bad mac", func(r *SetupRequest) { r.Network.Mac = "02:00" }, false},
		{"gateway off subnet", func(r *SetupRequest) { r.Network.Gateway = "10.89.0.1" }, false},
		{"ipv6 address", func(r *SetupRequest) { r.Network.Ipv4Cidr = "fd00::1/64"; r.Network.Gateway = "" }, false},
		{"too many dns", func(r *SetupRequest) { r.Network.DnsServers = []string{"1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"} }, false},
		{"no containers", func(r *SetupRequest) { r.Containers = nil }, false},
		{"duplicate container", func(r *SetupRequest) { r.Containers = append(r.Containers, r.Containers[0]) }, false},
		{"bad name", func(r *SetupRequest) { r.Containers[0].Name = "../etc" }, false},
		{"undeclared image drive", func(r *SetupRequest) { r.Containers[0].ImageDrive = "rw" }, false},
		{"two writable drives", func(r *SetupRequest) {
			r.Drives = append(r.Drives, &Drive{Serial: "rw2", Role: DriveRole_DRIVE_ROLE_WRITABLE, FsType: "ext4"})
		}, false},
		{"writable not ext4", func(r *SetupRequest) { r.Drives[0].FsType = "xfs" }, false},
		{"nul in arg", func(r *SetupRequest) { r.Containers[0].Args = []string{"sh", "a\x00b"} }, false},
		{"huge arg", func(r *SetupRequest) { r.Containers[0].Args = []string{strings.Repeat("a", MaxStringBytes+1)} }, false},
		{"too many args", func(r *SetupRequest) { r.Containers[0].Args = make([]string, MaxArgs+1); r.Containers[0].Args[0] = "x" }, false},
		{"env without =", func(r *SetupRequest) { r.Containers[0].Env = []string{"PATH"} }, false},
		{"relative cwd", func(r *SetupRequest) { r.Containers[0].Cwd = "tmp" }, false},
		{"tiny memory", func(r *SetupRequest) { r.Containers[0].MemoryBytes = 4096 }, false},
		{"negative pids", func(r *SetupRequest) { r.PidsLimit = -1 }, false},
		{"no drives, no image drive", func(r *SetupRequest) { r.Drives = nil; r.Containers[0].ImageDrive = "" }, true},
		{"restored", func(r *SetupRequest) { r.Restored = true }, true},
		{"entropy at the minimum", func(r *SetupRequest) { r.Entropy = make([]byte, MinEntropyBytes) }, true},
		{"entropy at the maximum", func(r *SetupRequest) { r.Entropy = make([]byte, MaxEntropyBytes) }, true},
		{"entropy too short", func(r *SetupRequest) { r.Entropy = make([]byte, MinEntropyBytes-1) }, false},
		{"entropy of one byte", func(r *SetupRequest) { r.Entropy = []byte{1} }, false},
		{"entropy too long", func(r *SetupRequest) { r.Entropy = make([]byte, MaxEntropyBytes+1) }, false},
	}
	for _, tt := range tests {
		r := okSetup()
		tt.change(r)
		err := r.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v; want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: Validate() = %v; want an errdefs.ErrInvalid", tt.name, err)
		}
	}
}

func TestResumeValidate(t *testing.T) {
	const now = int64(1_800_000_000_000_000_000)
	tests := []struct {
		name string
		req  *ResumeRequest
		ok   bool
	}{
		{"time, no entropy", &ResumeRequest{TimeUnixNano: now}, true},
		{"time and 32 bytes", &ResumeRequest{TimeUnixNano: now, Entropy: make([]byte, MinEntropyBytes)}, true},
		{"time and 256 bytes", &ResumeRequest{TimeUnixNano: now, Entropy: make([]byte, MaxEntropyBytes)}, true},
		{"no time", &ResumeRequest{Entropy: make([]byte, MinEntropyBytes)}, false},
		{"negative time", &ResumeRequest{TimeUnixNano: -1}, false},
		{"31 bytes", &ResumeRequest{TimeUnixNano: now, Entropy: make([]byte, MinEntropyBytes-1)}, false},
		{"257 bytes", &ResumeRequest{TimeUnixNano: now, Entropy: make([]byte, MaxEntropyBytes+1)}, false},
		{"nil request", nil, false},
	}
	for _, tt := range tests {
		err := tt.req.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v; want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: Validate() = %v; want an errdefs.ErrInvalid", tt.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "entropy") && !strings.Contains(err.Error(), "time") {
			t.Errorf("%s: Validate() = %v; want it to name the field", tt.name, err)
		}
	}
}

func TestSanitize(t *testing.T) {
	got := sanitize("bad\x1b[2J\nline" + strings.Repeat("x", 2*MaxErrorBytes))
	if strings.ContainsAny(got, "\x1b\n") || len(got) > MaxErrorBytes+3 {
		t.Errorf("sanitize kept control bytes or length %d", len(got))
	}
}
