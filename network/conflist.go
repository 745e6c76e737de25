package network

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/libcni"
)

// cniVersion is the newest spec version the plugins we target speak
// (containernetworking-plugins 1.1.x supports up to 1.0.0).
const cniVersion = "1.0.0"

// requiredPlugins are the binaries the generated conflist runs.
var requiredPlugins = []string{"bridge", "host-local", "portmap"}

// confList builds the CNI network configuration list for cfg:
//
//   - bridge: creates cfg.BridgeName, gives it the gateway address
//     (isGateway), masquerades outbound traffic (ipMasq) and lets an
//     instance reach itself through its own published port (hairpinMode);
//     host-local allocates from cfg.Subnet and keeps its data under
//     stateDir/ipam, not the global /var/lib/cni.
//   - portmap: publishes the runtime's portMappings with DNAT; snat makes
//     connections to 127.0.0.1:<hostPort> from the host work (it
//     masquerades them and sets route_localnet on the bridge).
//
// The loopback interface is not a plugin here: the namespace is created with
// lo already up (see pinNetNS).
func confList(cfg Config, ipamDir string) (*libcni.NetworkConfigList, error) {
	type obj = map[string]any
	list := obj{
		"cniVersion": cniVersion,
		"name":       cfg.NetworkName,
		"plugins": []obj{
			{
				"type":        "bridge",
				"bridge":      cfg.BridgeName,
				"isGateway":   true,
				"ipMasq":      cfg.IPMasq,
				"hairpinMode": true,
				"ipam": obj{
					"type":    "host-local",
					"ranges":  [][]obj{{{"subnet": cfg.Subnet}}},
					"routes":  []obj{{"dst": "0.0.0.0/0"}},
					"dataDir": ipamDir,
				},
			},
			{
				"type":         "portmap",
				"capabilities": obj{"portMappings": true},
				"snat":         true,
			},
		},
	}
	b, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("encode cni config: %w", err)
	}
	l, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("parse generated cni config: %w", err)
	}
	return l, nil
}
