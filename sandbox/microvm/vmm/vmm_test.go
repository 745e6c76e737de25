package vmm

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/cube-platform/cube/errdefs"
)

func validConfig() Config {
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	return Config{
		ID: "sb-1", Kernel: "/k", VCPUs: 1, MemoryMiB: 128, StateDir: "/s", AgentSocket: "/s/a.sock",
		Drives: []Drive{{ID: "image", Path: "/i", ReadOnly: true}},
		Net:    &NIC{Tap: "tap0", MAC: mac},
		Jail:   JailConfig{UID: 200000, GID: 200000},
	}
}

func TestValidate(t *testing.T) {
	if c := validConfig(); c.Validate() != nil {
		t.Fatalf("Validate(valid) = %v; want nil", c.Validate())
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"id with slash", func(c *Config) { c.ID = "a/b" }},
		{"no kernel", func(c *Config) { c.Kernel = "" }},
		{"zero vcpus", func(c *Config) { c.VCPUs = 0 }},
		{"tiny memory", func(c *Config) { c.MemoryMiB = 8 }},
		{"no state dir", func(c *Config) { c.StateDir = "" }},
		{"no agent socket", func(c *Config) { c.AgentSocket = "" }},
		{"unknown accel", func(c *Config) { c.Accel = "hvf" }},
		{"root uid", func(c *Config) { c.Jail.UID = 0 }},
		{"serial with comma", func(c *Config) { c.Drives[0].ID = "a,b" }},
		{"serial too long", func(c *Config) { c.Drives[0].ID = strings.Repeat("a", 21) }},
		{"duplicate serial", func(c *Config) { c.Drives = append(c.Drives, c.Drives[0]) }},
		{"drive without path", func(c *Config) { c.Drives[0].Path = "" }},
		{"long tap name", func(c *Config) { c.Net.Tap = strings.Repeat("t", 16) }},
		{"multicast mac", func(c *Config) { c.Net.MAC = net.HardwareAddr{1, 2, 3, 4, 5, 6} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mod(&c)
			if err := c.Validate(); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("Validate = %v; want ErrInvalid", err)
			}
		})
	}
}
