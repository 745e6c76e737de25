package network

import (
	"context"
	"errors"
	"fmt"
)

// The manager's side of the packet filter (filter.go): a port's elements
// are added after CNI ADD and removed after CNI DEL; should either fail
// (say the tables were flushed behind our back), the whole filter is
// rewritten from the state files instead.

// filterAdd makes st's filter. Preconditions: st.ID locked, st written
// with HostVeth set.
func (m *cniManager) filterAdd(ctx context.Context, st instanceState) error {
	err := m.filter.add(ctx, st.port())
	if err == nil {
		return nil
	}
	m.log.Warn("adding to the packet filter failed; rewriting it", "id", st.ID, "err", err)
	if serr := m.filterSync(ctx, ""); serr != nil {
		return errors.Join(err, serr)
	}
	return nil
}

// filterRemove drops st's filter. Preconditions: st.ID locked, st's veth
// gone.
func (m *cniManager) filterRemove(ctx context.Context, st instanceState) error {
	err := m.filter.remove(ctx, st.port())
	if err == nil {
		return nil
	}
	m.log.Warn("removing from the packet filter failed; rewriting it", "id", st.ID, "err", err)
	if serr := m.filterSync(ctx, st.ID); serr != nil {
		return errors.Join(err, serr)
	}
	return nil
}

// filterSync rewrites the filter for every state with a host veth but
// that of exclude (one being torn down).
func (m *cniManager) filterSync(ctx context.Context, exclude string) error {
	all, err := m.states.all()
	if err != nil {
		return err
	}
	var ports []port
	for _, st := range all {
		if st.HostVeth != "" && st.ID != exclude {
			ports = append(ports, st.port())
		}
	}
	sortPorts(ports)
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
