package jail

import (
	"fmt"
	"path"
	"strings"

	"github.com/cube-platform/cube/errdefs"
)

// HelperName is argv[0] of the re-executed helper.
const HelperName = "cube-vmm-jail"

// Bind is one host file or directory made visible inside the jail.
type Bind struct {
	// Src is the host path.
	Src string `json:"src"`
	// Dst is the absolute path inside the jail.
	Dst string `json:"dst"`
	// Exec allows executing or mmap-exec'ing it (the VMM binary and
	// libraries); everything else is noexec.
	Exec bool `json:"exec,omitempty"`
	// Dev allows using it as a device node (/dev/null, /dev/kvm); all
	// else is nodev.
	Dev bool `json:"dev,omitempty"`
	// Writable binds read-write; the default is read-only.
	Writable bool `json:"writable,omitempty"`
}

// Rlimit is one resource limit of the VMM process.
type Rlimit struct {
	Resource int    `json:"resource"` // unix.RLIMIT_*
	Cur      uint64 `json:"cur"`
	Max      uint64 `json:"max"`
}

// helperSpec is what the parent sends the helper over its spec pipe.
type helperSpec struct {
	// Path of the VMM binary inside the jail (one of Binds' Dst).
	Path    string   `json:"path"`
	Args    []string `json:"args"`
	Root    string   `json:"root"`
	Binds   []Bind   `json:"binds"`
	UID     int      `json:"uid"`
	GID     int      `json:"gid"`
	Groups  []int    `json:"groups,omitempty"`
	Rlimits []Rlimit `json:"rlimits"`
	// NFiles is how many extra files the parent passed (fds 3..).
	NFiles int `json:"nfiles"`
	// ParentPid: the helper exits if its parent is no longer this one
	// after PR_SET_PDEATHSIG is set (the parent died in between).
	ParentPid int `json:"parentPid"`
	// Proc: mount the VMM's own /proc (see Spec.Proc).
	Proc bool `json:"proc,omitempty"`
}

func (s *helperSpec) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("jail: %s: %w", fmt.Sprintf(format, a...), errdefs.ErrInvalid)
	}
	if s.UID <= 0 || s.GID <= 0 {
		return bad("uid and gid must be non-zero, got %d:%d", s.UID, s.GID)
	}
	for _, g := range s.Groups {
		if g <= 0 {
			return bad("supplementary group %d must be non-zero", g)
		}
	}
	if !path.IsAbs(s.Root) || path.Clean(s.Root) == "/" {
		return bad("root %q must be an absolute path other than /", s.Root)
	}
	found := false
	for _, b := range s.Binds {
		if !path.IsAbs(b.Src) || !path.IsAbs(b.Dst) || path.Clean(b.Dst) != b.Dst || b.Dst == "/" || strings.Contains(b.Dst, "..") {
			return bad("bind %q -> %q must map absolute, clean paths", b.Src, b.Dst)
		}
		if b.Dst == s.Path {
			found = b.Exec
		}
	}
	if !found {
		return bad("the vmm binary %q must be an Exec bind", s.Path)
	}
	return nil
}
