package network

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v; want nil", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*Config)
		wantErr string // substring; "" means valid
	}{
		{"default", func(*Config) {}, ""},
		{"empty network name", func(c *Config) { c.NetworkName = "" }, "network name"},
		{"network name with slash", func(c *Config) { c.NetworkName = "a/b" }, "network name"},
		{"bridge name too long", func(c *Config) { c.BridgeName = "a-very-long-bridge" }, "bridge name"},
		{"bridge name with colon", func(c *Config) { c.BridgeName = "br:0" }, "bridge name"},
		{"subnet not cidr", func(c *Config) { c.Subnet = "10.0.0.1" }, "is not a CIDR"},
		{"subnet ipv6", func(c *Config) { c.Subnet = "fd00::/64" }, "not IPv4"},
		{"subnet host bits", func(c *Config) { c.Subnet = "10.1.2.3/16" }, "did you mean 10.1.0.0/16"},
		{"subnet too small", func(c *Config) { c.Subnet = "10.1.2.0/30" }, "between /8 and /29"},
		{"no plugin dirs", func(c *Config) { c.PluginDirs = nil }, "no cni plugin directories"},
		{"relative plugin dir", func(c *Config) { c.PluginDirs = []string{"cni"} }, "not an absolute path"},
		{"relative state dir", func(c *Config) { c.StateDir = "state" }, "state dir"},
		{"relative netns dir", func(c *Config) { c.NetNSDir = "" }, "netns dir"},
		{"zero timeout", func(c *Config) { c.PluginTimeout = 0 }, "plugin timeout"},
		{"negative timeout", func(c *Config) { c.PluginTimeout = -time.Second }, "plugin timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.modify(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v; want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v; want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigValidateReportsAll(t *testing.T) {
	c := Config{}
	err := c.Validate()
	if err == nil {
		t.Fatal("Config{}.Validate() = nil; want errors")
	}
	for _, want := range []string{"network name", "bridge name", "subnet", "plugin directories", "state dir", "netns dir", "plugin timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Config{}.Validate() = %q; want it to mention %q", err, want)
		}
	}
}

func TestConfList(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IPMasq = false
	l, err := confList(cfg, "/state/ipam", chainLegacy)
	if err != nil {
		t.Fatalf("confList() error = %v", err)
	}
	if l.Name != "cube" || l.CNIVersion != cniVersion || len(l.Plugins) != 2 {
		t.Fatalf("confList() = name %q version %q %d plugins; want cube %s 2", l.Name, l.CNIVersion, len(l.Plugins), cniVersion)
	}
	if got := l.Plugins[0].Network.Type; got != "bridge" {
		t.Errorf("plugin 0 type = %q; want bridge", got)
	}
	if got := l.Plugins[1].Network.Capabilities; !got["portMappings"] {
		t.Errorf("portmap capabilities = %v; want portMappings", got)
	}
	for _, want := range []string{`"dataDir":"/state/ipam"`, `"subnet":"10.213.0.0/16"`, `"bridge":"cube0"`, `"ipMasq":false`, `"hairpinMode":true`, `"isGateway":true`, `"snat":true`} {
		if !strings.Contains(string(l.Bytes), want) {
			t.Errorf("conflist %s; want it to contain %s", l.Bytes, want)
		}
	}

	for _, tc := range []struct {
		chain   string
		plugins int
	}{{chainBridge, 1}, {chainBridgePortMap, 2}} {
		cfg.IPMasq = true
		l, err := confList(cfg, "/state/ipam", tc.chain)
		if err != nil {
			t.Fatalf("confList(%q) error = %v", tc.chain, err)
		}
		if len(l.Plugins) != tc.plugins || l.Plugins[0].Network.Type != "bridge" || !strings.Contains(string(l.Bytes), `"ipMasq":false`) {
			t.Errorf("confList(%q) = %s; want %d plugins, bridge first, without ipMasq", tc.chain, l.Bytes, tc.plugins)
		}
	}
	if _, err := confList(cfg, "/state/ipam", "bridge,other"); err == nil {
		t.Error("confList(unknown chain) succeeded; want an error")
	}
}
