package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// maxSocketPath keeps a socket path within sun_path (108 bytes with NUL).
const maxSocketPath = 107

// listen opens the logs and exec server's listener and returns it with the
// address to register. A unix socket is made mode 0600 in a 0700 dir, so
// only root reaches it; a TCP address must name a fixed port, because a
// random one could be a port a tenant later publishes.
func listen(addr string) (net.Listener, string, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
			return nil, "", fmt.Errorf("node agent listen address %q: want unix:PATH or HOST:PORT with a fixed port", addr)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, "", fmt.Errorf("node agent listen on %s: %w", addr, err)
		}
		return ln, ln.Addr().String(), nil
	}
	if !filepath.IsAbs(path) || len(path) > maxSocketPath {
		return nil, "", fmt.Errorf("node agent socket %q: want an absolute path of at most %d bytes (use a shorter --data-dir, or --node-listen HOST:PORT)", path, maxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("node agent socket dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("node agent socket dir: %w", err)
	}
	// A socket left by a crashed agent is removed; one that answers belongs
	// to a live agent on the same state dir, which must not be taken over.
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, "", fmt.Errorf("another node agent is serving on %s: stop it first", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("remove stale node agent socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, "", fmt.Errorf("node agent listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, "", fmt.Errorf("node agent socket: %w", err)
	}
	return ln, "unix:" + path, nil
}
