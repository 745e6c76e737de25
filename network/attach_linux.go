package network

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cube-platform/cube/errdefs"
)

// Attaching an instance is two steps so that the node agent can build the
// sandbox while CNI runs: Pin (reserve the host ports, pin the namespace)
// and Attach (CNI ADD, masquerade). Setup does both.

// Pin implements Manager.
func (m *cniManager) Pin(ctx context.Context, id, tenant string, ports []PortMapping) (_ string, err error) {
	if err := validateID(id); err != nil {
		return "", err
	}
	if err := validateTenant(id, tenant); err != nil {
		return "", err
	}
	ports, err = normalizePorts(ports)
	if err != nil {
		return "", fmt.Errorf("instance %s: %w", id, err)
	}
	unlock, err := m.ids.lock(ctx, id)
	if err != nil {
		return "", fmt.Errorf("instance %s: wait for network operation under way: %w", id, err)
	}
	defer unlock()
	return m.pin(ctx, id, tenant, ports)
}

// pin does Pin's work. Preconditions: id locked.
func (m *cniManager) pin(ctx context.Context, id, tenant string, ports []PortMapping) (string, error) {
	st, found, err := m.states.get(id)
	if err != nil {
		return "", err
	}
	if found {
		if isPinnedNetNS(st.NetNS) {
			if !slices.Equal(st.Ports, ports) {
				m.log.Warn("instance already pinned with other port mappings; keeping them",
					"id", id, "have", st.Ports, "want", ports)
			}
			if st.Tenant != tenant {
				m.log.Warn("instance already pinned for another tenant; keeping it",
					"id", id, "have", st.Tenant, "want", tenant)
			}
			return st.NetNS, nil
		}
		// A Pin crashed before pinning, or the pin vanished (reboot).
		m.log.Info("cleaning up incomplete network attachment", "id", id, "ready", st.Ready)
		if err := m.teardown(ctx, st); err != nil {
			return "", fmt.Errorf("instance %s: clean up incomplete attachment: %w", id, err)
		}
	}

	st = instanceState{ID: id, NetNS: filepath.Join(m.cfg.NetNSDir, id), Ports: ports, Tenant: tenant, Chain: chainBridgePortMap}
	if len(ports) == 0 {
		st.Chain = chainBridge
	}
	if _, err := os.Lstat(st.NetNS); err == nil {
		m.log.Warn("removing netns pin without network state", "id", id, "path", st.NetNS)
		if err := unmountAndRemove(st.NetNS); err != nil {
			return "", fmt.Errorf("instance %s: %w", id, err)
		}
	}
	if err := m.reserve(st); err != nil {
		return "", fmt.Errorf("instance %s: %w", id, err)
	}
	if err := pinNetNS(st.NetNS); err != nil {
		if rerr := m.states.remove(id); rerr != nil {
			err = errors.Join(err, fmt.Errorf("roll back (retry with Teardown): %w", rerr))
		}
		return "", fmt.Errorf("instance %s: %w", id, err)
	}
	m.setUnattached(id, true)
	return st.NetNS, nil
}

// Attach implements Manager.
func (m *cniManager) Attach(ctx context.Context, id string) (Attachment, error) {
	if err := validateID(id); err != nil {
		return Attachment{}, err
	}
	unlock, err := m.ids.lock(ctx, id)
	if err != nil {
		return Attachment{}, fmt.Errorf("instance %s: wait for network operation under way: %w", id, err)
	}
	defer unlock()
	return m.attach(ctx, id)
}

// attach does Attach's work. Preconditions: id locked.
func (m *cniManager) attach(ctx context.Context, id string) (Attachment, error) {
	st, found, err := m.states.get(id)
	if err != nil {
		return Attachment{}, err
	}
	if !found {
		return Attachment{}, fmt.Errorf("instance %s has no network namespace; call Pin first: %w", id, errdefs.ErrNotFound)
	}
	if !isPinnedNetNS(st.NetNS) {
		return Attachment{}, fmt.Errorf("instance %s: network namespace %s is gone; Teardown and Pin again: %w", id, st.NetNS, errdefs.ErrConflict)
	}
	if st.Ready {
		return m.attachmentOf(st), nil
	}
	if !m.isUnattached(id) {
		// An ADD of an earlier manager (or one whose rollback failed) may
		// have got halfway: undo it, or this ADD trips over its leftovers.
		m.log.Info("cleaning up incomplete network attachment", "id", id)
		if err := m.del(ctx, st); err != nil {
			return Attachment{}, fmt.Errorf("instance %s: clean up incomplete attachment: %w", id, err)
		}
	}
	m.setUnattached(id, false)
	res, err := m.add(ctx, st)
	if err == nil {
		st.IP, st.HostVeth, st.MAC = res.ip, res.veth, res.mac
		st.PrefixLen, st.Gateway, st.Routes, st.DNS = res.prefix, res.gateway, res.routes, res.dns
		// The filter before Ready: a crash between the two leaves elements
		// without a state, which the next manager's sync drops.
		err = m.filter.add(ctx, st.port())
	}
	if err == nil {
		st.Ready = true
		err = m.states.put(st)
		if err == nil {
			m.log.Info("instance attached", "id", id, "tenant", st.Tenant, "ip", st.IP, "veth", st.HostVeth, "netns", st.NetNS, "ports", st.Ports)
			return m.attachmentOf(st), nil
		}
	}
	// The caller's ctx may be what failed; the rollback still runs.
	if rerr := m.del(context.WithoutCancel(ctx), st); rerr != nil {
		m.log.Error("rollback of failed network attach", "id", id, "err", rerr)
		err = errors.Join(err, fmt.Errorf("roll back (retry with Teardown): %w", rerr))
	} else {
		m.setUnattached(id, true)
	}
	return Attachment{}, fmt.Errorf("instance %s: %w", id, err)
}

// Setup implements Manager.
func (m *cniManager) Setup(ctx context.Context, id, tenant string, ports []PortMapping) (_ Attachment, err error) {
	if err := validateID(id); err != nil {
		return Attachment{}, err
	}
	if err := validateTenant(id, tenant); err != nil {
		return Attachment{}, err
	}
	ports, err = normalizePorts(ports)
	if err != nil {
		return Attachment{}, fmt.Errorf("instance %s: %w", id, err)
	}
	unlock, err := m.ids.lock(ctx, id)
	if err != nil {
		return Attachment{}, fmt.Errorf("instance %s: wait for network operation under way: %w", id, err)
	}
	defer unlock()
	if _, err := m.pin(ctx, id, tenant, ports); err != nil {
		return Attachment{}, err
	}
	att, err := m.attach(ctx, id)
	if err != nil {
		// Leave nothing behind, as if Setup had never been called.
		if st, found, gerr := m.states.get(id); gerr == nil && found {
			if rerr := m.teardown(context.WithoutCancel(ctx), st); rerr != nil {
				m.log.Error("rollback of failed network setup", "id", id, "err", rerr)
				err = errors.Join(err, fmt.Errorf("roll back (retry with Teardown): %w", rerr))
			}
		}
		return Attachment{}, err
	}
	return att, nil
}

// setUnattached records whether id was pinned by this manager with no CNI
// ADD run on it since, so Attach can skip undoing a partial ADD.
func (m *cniManager) setUnattached(id string, v bool) {
	m.unattachedMu.Lock()
	defer m.unattachedMu.Unlock()
	if v {
		m.unattached[id] = true
	} else {
		delete(m.unattached, id)
	}
}

func (m *cniManager) isUnattached(id string) bool {
	m.unattachedMu.Lock()
	defer m.unattachedMu.Unlock()
	return m.unattached[id]
}

// attachmentOf is st's attachment. A state written before the CNI result's
// prefix and gateway were kept lacks them: they are the subnet's, as the
// bridge plugin (isGateway, host-local on the subnet) made them.
func (m *cniManager) attachmentOf(st instanceState) Attachment {
	a := st.attachment()
	if a.PrefixLen == 0 {
		if p, err := parseSubnet(m.cfg.Subnet); err == nil {
			a.PrefixLen = p.Bits()
			a.Gateway = p.Addr().Next().String()
		}
	}
	return a
}
