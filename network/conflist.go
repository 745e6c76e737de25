package network

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/libcni"
)

// Plugin chains an instance can be attached with; its state records which
// (instanceState.Chain), so DEL runs the chain ADD ran.
const (
	// chainLegacy is what attachments made before the field existed ran:
	// bridge with the plugin's own ipMasq, then portmap.
	chainLegacy = ""
	// chainBridge is for instances that publish no port: portmap would do
	// nothing on ADD but cost an exec, and iptables runs on DEL.
	chainBridge = "bridge"
	// chainBridgePortMap publishes ports.
	chainBridgePortMap = "bridge,portmap"
)

// cniVersion is the newest spec version the plugins we target speak
// (containernetworking-plugins 1.1.x supports up to 1.0.0).
const cniVersion = "1.0.0"

// requiredPlugins are the binaries the generated conflist runs.
var requiredPlugins = []string{"bridge", "host-local", "portmap"}

// confList builds the CNI network configuration list for cfg:
//
//   - bridge: creates cfg.BridgeName, gives it the gateway address
//     (isGateway) and lets an instance reach itself through its own
//     published port (hairpinMode); in chainLegacy it also masquerades
//     outbound traffic (ipMasq), which the manager does itself otherwise;
//     host-local allocates from cfg.Subnet and keeps its data under
//     stateDir/ipam, not the global /var/lib/cni.
//   - portmap: publishes the runtime's portMappings with DNAT; snat makes
//     connections to 127.0.0.1:<hostPort> from the host work (it
//     masquerades them and sets route_localnet on the bridge).
//
// The loopback interface is not a plugin here: the namespace is created with
// lo already up (see pinNetNS).
//
// The chain is chainLegacy, chainBridge or chainBridgePortMap. The latter
// two leave masquerading to the manager (see addMasq): their bridge never
// sets ipMasq.
func confList(cfg Config, ipamDir, chain string) (*libcni.NetworkConfigList, error) {
	ipMasq, withPortMap := false, true
	switch chain {
	case chainLegacy:
		ipMasq = cfg.IPMasq
	case chainBridge:
		withPortMap = false
	case chainBridgePortMap:
	default:
		return nil, fmt.Errorf("unknown cni plugin chain %q", chain)
	}
	type obj = map[string]any
	plugins := []obj{
		{
			"type":        "bridge",
			"bridge":      cfg.BridgeName,
			"isGateway":   true,
			"ipMasq":      ipMasq,
			"hairpinMode": true,
			"ipam": obj{
				"type":    "host-local",
				"ranges":  [][]obj{{{"subnet": cfg.Subnet}}},
				"routes":  []obj{{"dst": "0.0.0.0/0"}},
				"dataDir": ipamDir,
			},
		},
	}
	if withPortMap {
		plugins = append(plugins, obj{
			"type":         "portmap",
			"capabilities": obj{"portMappings": true},
			"snat":         true,
		})
	}
	list := obj{"cniVersion": cniVersion, "name": cfg.NetworkName, "plugins": plugins}
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
