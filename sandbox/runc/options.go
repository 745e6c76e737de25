package runc

import "log/slog"

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
