package tap

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Setup makes, inside the network namespace at netnsPath ("" for the
// caller's own), the tap device tapName (persistent, root-only to attach,
// same MTU as link) and an ingress tc filter on link and on the tap that
// redirects every frame to the other's egress. It returns link's MAC: the
// guest must use it, so frames the redirect hands over are addressed to it.
//
// Setup is idempotent: run again it leaves one tap and one filter per
// direction. On error it removes what it made.
func Setup(netnsPath, link, tapName string) (mac net.HardwareAddr, retErr error) {
	h, err := handle(netnsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	eth, err := h.LinkByName(link)
	if err != nil {
		return nil, fmt.Errorf("tap: interface %s in %s: %w", link, nsName(netnsPath), err)
	}
	t, err := h.LinkByName(tapName)
	if err != nil {
		if !isNotFound(err) {
			return nil, fmt.Errorf("tap: look up %s: %w", tapName, err)
		}
		if err := inNetNS(netnsPath, func() error { return createTap(tapName) }); err != nil {
			return nil, err
		}
		if t, err = h.LinkByName(tapName); err != nil {
			return nil, fmt.Errorf("tap: look up %s after creating it: %w", tapName, err)
		}
	} else if t.Type() != "tuntap" {
		return nil, fmt.Errorf("tap: %s exists and is a %s, not a tap", tapName, t.Type())
	}
	defer func() {
		if retErr != nil {
			Remove(netnsPath, link, tapName)
		}
	}()
	if err := inNetNS(netnsPath, func() error { return noIPv6(tapName) }); err != nil {
		return nil, err
	}
	if err := h.LinkSetMTU(t, eth.Attrs().MTU); err != nil {
		return nil, fmt.Errorf("tap: set mtu of %s: %w", tapName, err)
	}
	if err := h.LinkSetUp(t); err != nil {
		return nil, fmt.Errorf("tap: set %s up: %w", tapName, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return nil, fmt.Errorf("tap: set %s up: %w", link, err)
	}
	if err := redirect(h, eth, t); err != nil {
		return nil, err
	}
	if err := redirect(h, t, eth); err != nil {
		return nil, err
	}
	return eth.Attrs().HardwareAddr, nil
}

// Remove deletes the tap (its qdisc and filter go with it) and link's
// ingress qdisc (with its filter). What is already gone is fine, so
// Remove is idempotent; a namespace that is gone counts as removed.
func Remove(netnsPath, link, tapName string) error {
	h, err := handle(netnsPath)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	defer h.Close()
	var errs []error
	if t, err := h.LinkByName(tapName); err == nil {
		if err := h.LinkDel(t); err != nil {
			errs = append(errs, fmt.Errorf("tap: delete %s: %w", tapName, err))
		}
	} else if !isNotFound(err) {
		errs = append(errs, err)
	}
	if eth, err := h.LinkByName(link); err == nil {
		q := ingress(eth.Attrs().Index)
		if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("tap: delete ingress qdisc of %s: %w", link, err))
		}
	} else if !isNotFound(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func handle(netnsPath string) (*netlink.Handle, error) {
	if netnsPath == "" {
		return netlink.NewHandle()
	}
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("tap: open netns %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("tap: netlink in %s: %w", netnsPath, err)
	}
	return h, nil
}

func nsName(p string) string {
	if p == "" {
		return "the host namespace"
	}
	return p
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// noIPv6 turns IPv6 off on the tap in the current thread's namespace
// (/proc/sys/net is the opener's netns). The tap is a wire to the guest,
// not an interface of the namespace: no link-local address, router
// solicitations or MLD reports from it into the guest.
func noIPv6(name string) error {
	err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("tap: disable ipv6 on %s: %w", name, err)
	}
	return nil
}

// createTap makes a persistent tap in the current thread's namespace.
// Without an owner only CAP_NET_ADMIN can attach to it.
func createTap(name string) error {
	f, err := openTap(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("tap: make %s persistent: %w", name, err)
	}
	return nil
}

func ingress(index int) *netlink.Ingress {
	return &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_INGRESS,
	}}
}

// redirect makes every frame that arrives on from leave through to: an
// ingress qdisc with one u32 match-all filter whose action is a mirred
// egress redirect. An existing filter set is replaced, so there is
// always exactly one.
func redirect(h *netlink.Handle, from, to netlink.Link) error {
	idx := from.Attrs().Index
	// Replacing an ingress qdisc is EINVAL; one that exists is kept.
	if err := h.QdiscAdd(ingress(idx)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("tap: ingress qdisc on %s: %w", from.Attrs().Name, err)
	}
	parent := netlink.MakeHandle(0xffff, 0)
	old, err := h.FilterList(from, parent)
	if err != nil {
		return fmt.Errorf("tap: list filters of %s: %w", from.Attrs().Name, err)
	}
	for _, f := range old {
		if err := h.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("tap: delete old filter of %s: %w", from.Attrs().Name, err)
		}
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: idx,
			Parent:    parent,
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR,
			Ifindex:      to.Attrs().Index,
		}},
	}
	if err := h.FilterAdd(f); err != nil {
		return fmt.Errorf("tap: redirect %s to %s: %w", from.Attrs().Name, to.Attrs().Name, err)
	}
	return nil
}
