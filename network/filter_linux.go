package network

import (
	"context"
	"fmt"
)

// The manager's side of the packet filter (filter.go): a port's elements
// are added after CNI ADD, before the state says Ready, and removed after
// CNI DEL; NewCNI rewrites the filter from the state files.

// filterSync rewrites the filter for every state with a host veth.
func (m *cniManager) filterSync(ctx context.Context) error {
	all, err := m.states.all()
	if err != nil {
		return err
	}
	var ports []port
	for _, st := range all {
		if st.HostVeth != "" {
			ports = append(ports, st.port())
		}
	}
	return m.filter.sync(ctx, ports)
}

// adoptLegacy records the host veth and MAC of attachments made before
// the filter existed, from libcni's cache of their ADD results, so that
// the sync makes their filter too. They have no tenant recorded, so each
// is isolated from every other instance (see tenantGroup) until it is
// restarted.
func (m *cniManager) adoptLegacy() error {
	all, err := m.states.all()
	if err != nil {
		return err
	}
	for _, st := range all {
		if !st.Ready || st.HostVeth != "" || !isPinnedNetNS(st.NetNS) {
			continue
		}
		list, err := m.listFor(st)
		if err != nil {
			return err
		}
		res, err := m.cni.GetNetworkListCachedResult(list, m.runtimeConf(st))
		if err != nil || res == nil {
			m.log.Warn("attachment without a cached cni result: it gets no packet filter until it is restarted", "id", st.ID, "err", err)
			continue
		}
		r, err := parseResult(res, m.cfg.BridgeName)
		if err != nil {
			m.log.Warn("attachment with an unusable cached cni result: it gets no packet filter until it is restarted", "id", st.ID, "err", err)
			continue
		}
		st.HostVeth, st.MAC = r.veth, r.mac
		if err := m.states.put(st); err != nil {
			return fmt.Errorf("adopt attachment %s into the packet filter: %w", st.ID, err)
		}
		m.log.Info("adopted attachment into the packet filter", "id", st.ID, "veth", st.HostVeth)
	}
	return nil
}
