package network

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/cube-platform/cube/errdefs"
)

// ErrPortInUse is wrapped by Setup's error when a requested host port is
// already published by another instance of this manager, or already bound
// by a process on the host. It is an errdefs.ErrConflict too.
var ErrPortInUse error = portInUseError{}

type portInUseError struct{}

func (portInUseError) Error() string { return "host port in use" }
func (portInUseError) Unwrap() error { return errdefs.ErrConflict }

// normalizePorts validates ports and returns a copy with defaults filled in:
// protocol "tcp", lowercased, and "0.0.0.0" written as "" (every address).
// Two mappings of the request that claim the same host port are refused.
func normalizePorts(ports []PortMapping) ([]PortMapping, error) {
	if len(ports) == 0 {
		return nil, nil
	}
	out := make([]PortMapping, 0, len(ports))
	for _, p := range ports {
		p.Protocol = strings.ToLower(p.Protocol)
		if p.Protocol == "" {
			p.Protocol = "tcp"
		}
		if p.Protocol != "tcp" && p.Protocol != "udp" {
			return nil, fmt.Errorf("port mapping %s: protocol must be tcp or udp: %w", describePort(p), errdefs.ErrInvalid)
		}
		if p.HostPort < 1 || p.HostPort > 65535 || p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return nil, fmt.Errorf("port mapping %s: ports must be 1-65535: %w", describePort(p), errdefs.ErrInvalid)
		}
		if p.HostIP != "" {
			a, err := netip.ParseAddr(p.HostIP)
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("port mapping %s: host ip must be an IPv4 address: %w", describePort(p), errdefs.ErrInvalid)
			}
			if a.IsUnspecified() {
				p.HostIP = ""
			} else {
				p.HostIP = a.String()
			}
		}
		for _, q := range out {
			if portsOverlap(p, q) {
				return nil, fmt.Errorf("port mappings %s and %s claim the same host port: %w", describePort(q), describePort(p), errdefs.ErrInvalid)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// portsOverlap reports whether a and b (normalized) would catch the same
// packets on the host: same protocol and port, and host addresses that are
// equal or where either is every address.
func portsOverlap(a, b PortMapping) bool {
	return a.HostPort == b.HostPort && a.Protocol == b.Protocol &&
		(a.HostIP == "" || b.HostIP == "" || a.HostIP == b.HostIP)
}

// findPortConflict returns the first of want that overlaps a mapping of
// another instance in states, with that instance's id.
func findPortConflict(id string, want []PortMapping, states []instanceState) (PortMapping, string, bool) {
	for _, s := range states {
		if s.ID == id {
			continue
		}
		for _, have := range s.Ports {
			for _, w := range want {
				if portsOverlap(w, have) {
					return w, s.ID, true
				}
			}
		}
	}
	return PortMapping{}, "", false
}

// describePort renders p the way users write it: [hostIP:]hostPort:containerPort/proto.
func describePort(p PortMapping) string {
	proto := p.Protocol
	if proto == "" {
		proto = "tcp"
	}
	s := fmt.Sprintf("%d:%d/%s", p.HostPort, p.ContainerPort, proto)
	if p.HostIP != "" {
		s = p.HostIP + ":" + s
	}
	return s
}

// holdHostPorts refuses host ports that a process on the host has bound
// (the DNAT rules would silently steal its traffic) and binds the others,
// to be held for as long as they are published: a host service that
// starts later then fails to bind, instead of binding fine and having
// its local clients DNATed to the instance. The held sockets never see a
// packet (every local connection to the port is DNATed). Only "address in
// use" counts; any other bind error (say, a host IP that is not local) is
// left for the plugins to judge, and that port is not held.
func holdHostPorts(ports []PortMapping) ([]io.Closer, error) {
	var held []io.Closer
	for _, p := range ports {
		addr := net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort))
		var c io.Closer
		var err error
		if p.Protocol == "udp" {
			c, err = net.ListenPacket("udp4", addr)
		} else {
			c, err = net.Listen("tcp4", addr)
		}
		if err == nil {
			held = append(held, c)
			continue
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			closeAll(held)
			return nil, fmt.Errorf("host port %s is already bound by a process on this host: %w", describePort(p), ErrPortInUse)
		}
	}
	return held, nil
}

func closeAll(cs []io.Closer) {
	for _, c := range cs {
		c.Close()
	}
}
