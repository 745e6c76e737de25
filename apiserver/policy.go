package apiserver

import (
	"fmt"
	"os"
	"slices"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

// Defaults of the per-tenant bounds (Config fields override them).
const (
	// DefaultMaxInstances bounds a tenant's stored instances.
	DefaultMaxInstances = 100
	// DefaultMaxStreams bounds a tenant's open watches, waits, log follows
	// and exec sessions.
	DefaultMaxStreams = 32
	// DefaultMaxTokens bounds a tenant's tokens (each is an etcd key that
	// every request may read).
	DefaultMaxTokens = 64
)

// checkGrants refuses what only the admin can grant: bands above
// production and tolerations (by taint key). The admin tenant has every
// grant.
func checkGrants(t store.Tenant, in *v1.Instance) error {
	if t.Name == AdminTenant {
		return nil
	}
	if in.Spec.Priority == v1.PrioritySystem && !slices.Contains(t.AllowPriorities, in.Spec.Priority) {
		return fieldErr(errdefs.ErrForbidden, "spec.priority",
			"priority %q is not granted to tenant %s: ask the admin for `cube tenant update %s --allow-priority %s`",
			in.Spec.Priority, t.Name, t.Name, in.Spec.Priority)
	}
	for i, tol := range in.Spec.Tolerations {
		key, shown := tol.Key, tol.Key
		if key == "" {
			key, shown = "*", "'*'" // tolerates every taint
		}
		if !slices.Contains(t.AllowTolerations, key) && !slices.Contains(t.AllowTolerations, "*") {
			return fieldErr(errdefs.ErrForbidden, fmt.Sprintf("spec.tolerations[%d].key", i),
				"toleration of taint %q is not granted to tenant %s: ask the admin for `cube tenant update %s --allow-toleration %s`",
				key, t.Name, t.Name, shown)
		}
	}
	return nil
}

// allowedRuntimes are the runtimes t may use, in v1.Runtimes order: every
// one for the admin tenant; microvm and what the admin granted for others.
func allowedRuntimes(t store.Tenant) []string {
	var out []string
	for _, r := range v1.Runtimes {
		if t.Name == AdminTenant || r == v1.RuntimeMicroVM || slices.Contains(t.AllowRuntimes, r) {
			out = append(out, r)
		}
	}
	return out
}

// setRuntime defaults in's runtime for t and refuses one not granted: an
// instance that names none gets the server's default if t may use it,
// else t's first (microvm). A runtime is a security boundary (runc
// shares the node's kernel), so only the admin grants runc.
func (s *Server) setRuntime(t store.Tenant, in *v1.Instance) error {
	allowed := allowedRuntimes(t)
	if in.Spec.Runtime == "" {
		def := v1.RuntimeMicroVM
		if s.cfg.DefaultRuntime != nil {
			def = s.cfg.DefaultRuntime()
		}
		if slices.Contains(allowed, def) {
			in.Spec.Runtime = def
		} else {
			in.Spec.Runtime = allowed[0]
		}
		return nil
	}
	if !slices.Contains(allowed, in.Spec.Runtime) {
		return fieldErr(errdefs.ErrForbidden, "spec.runtime",
			"runtime %q is not granted to tenant %s, which may use %s: ask the admin for `cube tenant update %s --allow-runtime %s`",
			in.Spec.Runtime, t.Name, strings.Join(allowed, ", "), t.Name, in.Spec.Runtime)
	}
	return nil
}

// checkHostPorts keeps host ports where a tenant cannot harm the host:
// below 1024 only for the admin tenant, never in the ephemeral range (the
// kernel hands those to outgoing connections, the platform's included),
// never a port the platform listens on.
func (s *Server) checkHostPorts(tenant string, in *v1.Instance) error {
	for i, c := range in.Spec.Containers {
		for j, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			f := fmt.Sprintf("spec.containers[%d].ports[%d].hostPort", i, j)
			switch {
			case slices.Contains(s.cfg.ReservedPorts, p.HostPort):
				return &v1.FieldError{Field: f, Reason: fmt.Sprintf("host port %d is used by the platform itself: pick another", p.HostPort)}
			case p.HostPort >= s.cfg.EphemeralPorts[0] && p.HostPort <= s.cfg.EphemeralPorts[1]:
				return &v1.FieldError{Field: f, Reason: fmt.Sprintf("host port %d is in the host's ephemeral range %d-%d, which the kernel gives to outgoing connections: pick one below %d",
					p.HostPort, s.cfg.EphemeralPorts[0], s.cfg.EphemeralPorts[1], s.cfg.EphemeralPorts[0])}
			case p.HostPort < 1024 && tenant != AdminTenant:
				return fieldErr(errdefs.ErrForbidden, f, "host ports below 1024 are for the %s tenant only: pick one from 1024 up", AdminTenant)
			}
		}
	}
	return nil
}

// ephemeralRange reads the host's ephemeral port range, or Linux's
// default when it cannot.
func ephemeralRange() [2]int {
	var lo, hi int
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if n, _ := fmt.Sscanf(string(b), "%d %d", &lo, &hi); n == 2 && lo > 0 && lo <= hi && hi <= 65535 {
			return [2]int{lo, hi}
		}
	}
	return [2]int{32768, 60999}
}

// maxInstances is the object bound in force for t.
func (s *Server) maxInstances(t store.Tenant) int {
	if t.MaxInstances > 0 {
		return t.MaxInstances
	}
	return s.cfg.MaxInstances
}
