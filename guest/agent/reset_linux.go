package agent

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
)

// Reset undoes a rehearsal Setup: a pooled clone warms up on scratch
// drives with the very calls an instance's start makes, so that under
// TCG the host has translated their guest code before an instance is
// waiting for it (docs/microvm-templates.md). What it undoes is all a
// Setup and its containers leave: processes, mounts, cgroups, the
// agent's files, the link's addresses, routes and MAC, the hostname.
// It holds a.mu throughout, so no call slips in between.
func (s *service) Reset(ctx context.Context, _ *agentapi.Empty) (*agentapi.Empty, error) {
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.shutdown:
		return nil, fmt.Errorf("%w: the agent is shutting down", errdefs.ErrUnavailable)
	case a.setup == nil:
		return nil, fmt.Errorf("%w: nothing to reset: Setup has not run", errdefs.ErrConflict)
	case !a.setup.GetRehearsal():
		return nil, fmt.Errorf("%w: only a rehearsal Setup can be reset; this VM is an instance's", errdefs.ErrForbidden)
	}
	if err := a.reset(); err != nil {
		// Half undone: nothing may build on it. The host stops the VM.
		a.shutdown = true
		return nil, fmt.Errorf("reset: %w", err)
	}
	a.log.Debug("reset after a rehearsal")
	return &agentapi.Empty{}, nil
}

// reset does Reset's work. Preconditions: a.mu is held.
func (a *Agent) reset() error {
	left, err := killRuns(a.currentRuns())
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("the container init %d outlived SIGKILL for %s", left[0].initPid, killTimeout)
	}
	if err := a.unmountAllLocked(); err != nil {
		return err
	}
	for _, dir := range []string{"containers", "images", "rw", "etc"} {
		if err := os.RemoveAll(a.path(dir)); err != nil {
			return err
		}
	}
	if a.cgroups != nil {
		if err := a.cgroups.remove(); err != nil {
			return err
		}
	}
	if err := a.resetNetwork(); err != nil {
		return err
	}
	if a.cfg.Init && a.booted != nil {
		if err := unix.Sethostname([]byte(a.booted.hostname)); err != nil {
			return fmt.Errorf("reset the hostname: %w", err)
		}
	}
	a.setup, a.cgroups = nil, nil
	a.containers, a.mounted = map[string]*container{}, map[string]string{}
	return nil
}

// resetNetwork takes the link down and removes its addresses (the
// routes through it go with them) and gives it back the MAC and MTU it
// booted with.
func (a *Agent) resetNetwork() error {
	link, err := netlink.LinkByName(a.cfg.Link)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	} else if err != nil {
		return fmt.Errorf("find %s: %w", a.cfg.Link, err)
	}
	if err := netlink.LinkSetDown(link); err != nil {
		return fmt.Errorf("set %s down: %w", a.cfg.Link, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list %s's addresses: %w", a.cfg.Link, err)
	}
	for _, ad := range addrs {
		if err := netlink.AddrDel(link, &ad); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s from %s: %w", ad.IPNet, a.cfg.Link, err)
		}
	}
	if b := a.booted; b != nil && b.mac != nil {
		if err := netlink.LinkSetHardwareAddr(link, b.mac); err != nil {
			return fmt.Errorf("set %s's mac back: %w", a.cfg.Link, err)
		}
		if err := netlink.LinkSetMTU(link, b.mtu); err != nil {
			return fmt.Errorf("set %s's mtu back: %w", a.cfg.Link, err)
		}
	}
	return nil
}
