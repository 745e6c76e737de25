package network

import (
	"errors"
	"net"
	"reflect"
	"strconv"
	"testing"

	"github.com/cube-platform/cube/errdefs"
)

func TestNormalizePorts(t *testing.T) {
	tests := []struct {
		name    string
		in      []PortMapping
		want    []PortMapping
		wantErr error
	}{
		{"none", nil, nil, nil},
		{"defaults", []PortMapping{{HostPort: 8080, ContainerPort: 80}},
			[]PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}, nil},
		{"upper-case protocol and any-address", []PortMapping{{HostPort: 53, ContainerPort: 53, Protocol: "UDP", HostIP: "0.0.0.0"}},
			[]PortMapping{{HostPort: 53, ContainerPort: 53, Protocol: "udp"}}, nil},
		{"same port, different protocols", []PortMapping{{HostPort: 53, ContainerPort: 53}, {HostPort: 53, ContainerPort: 53, Protocol: "udp"}},
			[]PortMapping{{HostPort: 53, ContainerPort: 53, Protocol: "tcp"}, {HostPort: 53, ContainerPort: 53, Protocol: "udp"}}, nil},
		{"same port, different host ips", []PortMapping{{HostPort: 80, ContainerPort: 80, HostIP: "127.0.0.1"}, {HostPort: 80, ContainerPort: 80, HostIP: "127.0.0.2"}},
			[]PortMapping{{HostPort: 80, ContainerPort: 80, Protocol: "tcp", HostIP: "127.0.0.1"}, {HostPort: 80, ContainerPort: 80, Protocol: "tcp", HostIP: "127.0.0.2"}}, nil},
		{"sctp", []PortMapping{{HostPort: 1, ContainerPort: 1, Protocol: "sctp"}}, nil, errdefs.ErrInvalid},
		{"zero host port", []PortMapping{{ContainerPort: 80}}, nil, errdefs.ErrInvalid},
		{"container port too big", []PortMapping{{HostPort: 80, ContainerPort: 70000}}, nil, errdefs.ErrInvalid},
		{"ipv6 host ip", []PortMapping{{HostPort: 80, ContainerPort: 80, HostIP: "::1"}}, nil, errdefs.ErrInvalid},
		{"bad host ip", []PortMapping{{HostPort: 80, ContainerPort: 80, HostIP: "localhost"}}, nil, errdefs.ErrInvalid},
		{"duplicate in request", []PortMapping{{HostPort: 80, ContainerPort: 80}, {HostPort: 80, ContainerPort: 81, HostIP: "127.0.0.1"}}, nil, errdefs.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := normalizePorts(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("normalizePorts(%v) error = %v; want %v", tt.in, err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("normalizePorts(%v) = %v; want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestFindPortConflict(t *testing.T) {
	states := []instanceState{
		{ID: "a", Ports: []PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}},
		{ID: "b", Ports: []PortMapping{{HostPort: 9090, ContainerPort: 80, Protocol: "tcp", HostIP: "127.0.0.1"}}},
	}
	tests := []struct {
		id        string
		want      PortMapping
		wantOther string // "" means no conflict
	}{
		{"c", PortMapping{HostPort: 8080, ContainerPort: 1, Protocol: "tcp"}, "a"},
		{"c", PortMapping{HostPort: 8080, ContainerPort: 1, Protocol: "tcp", HostIP: "10.0.0.1"}, "a"},
		{"c", PortMapping{HostPort: 8080, ContainerPort: 1, Protocol: "udp"}, ""},
		{"a", PortMapping{HostPort: 8080, ContainerPort: 1, Protocol: "tcp"}, ""}, // its own
		{"c", PortMapping{HostPort: 9090, ContainerPort: 1, Protocol: "tcp"}, "b"},
		{"c", PortMapping{HostPort: 9090, ContainerPort: 1, Protocol: "tcp", HostIP: "127.0.0.1"}, "b"},
		{"c", PortMapping{HostPort: 9090, ContainerPort: 1, Protocol: "tcp", HostIP: "127.0.0.2"}, ""},
	}
	for _, tt := range tests {
		_, other, found := findPortConflict(tt.id, []PortMapping{tt.want}, states)
		if found != (tt.wantOther != "") || other != tt.wantOther {
			t.Errorf("findPortConflict(%s, %s) = %q, %v; want %q", tt.id, describePort(tt.want), other, found, tt.wantOther)
		}
	}
}

func TestHoldHostPorts(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	busy := PortMapping{HostPort: port, ContainerPort: 80, Protocol: "tcp"}
	if _, err := holdHostPorts([]PortMapping{busy}); !errors.Is(err, ErrPortInUse) {
		t.Errorf("holdHostPorts(%s) = %v; want ErrPortInUse (port bound on 127.0.0.1)", describePort(busy), err)
	}
	udp := PortMapping{HostPort: port, ContainerPort: 80, Protocol: "udp", HostIP: "127.0.0.1"}
	held, err := holdHostPorts([]PortMapping{udp})
	if err != nil {
		t.Errorf("holdHostPorts(%s) = %v; want nil (only tcp is bound)", describePort(udp), err)
	}
	// Held: a host process can no longer bind it.
	if c, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
		c.Close()
		t.Errorf("a host process bound udp port %d while it is held", port)
	}
	closeAll(held)
}
