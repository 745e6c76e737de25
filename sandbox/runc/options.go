package runc

import "log/slog"

// Defaults for a sandbox.Spec that leaves a bound at 0.
const (
	// DefaultPidsLimit caps the tasks (processes and threads) of a sandbox:
	// ample for a service with thread pools, and a fork bomb in one
	// instance leaves the rest of a node's pid space (32768 by default)
	// to the others.
	DefaultPidsLimit = 1024
	// DefaultDiskBytes is the size of a sandbox's writable layer.
	DefaultDiskBytes = 1 << 30
	// MinDiskBytes is the smallest writable layer: ext4 needs a few MiB
	// for itself.
	MinDiskBytes = 16 << 20
)

// Options tune the runc backend. The zero value is usable.
type Options struct {
	// Runtime is the runc binary: a path, or a name looked up in PATH.
	// Default "runc".
	Runtime string
	// Root is runc's --root state directory. Default <StateDir>/runc; it is
	// private to the sandbox and removed by Destroy.
	Root string
	// ResolvConf is the host file copied into every container as
	// /etc/resolv.conf. Default /etc/resolv.conf.
	ResolvConf string
	// Logger receives the backend's logs. Default slog.Default().
	Logger *slog.Logger
}
