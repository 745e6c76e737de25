package network

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// elements adds p's elements to the bridge table, or with del deletes
// them, in one netlink transaction: no nft process, so an Attach pays
// about a millisecond for its filter, not a fork and nft's parsing. The
// rules and a group's chains are written with nft (see writeGroup), as
// text anyone can read back with `nft list table`.
func (f *filter) elements(p port, del bool) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	mac, err := net.ParseMAC(p.MAC)
	if err != nil {
		return err
	}
	ip4 := netip.MustParseAddr(p.IP).As4()
	ip := ip4[:]
	ifn := make([]byte, 16) // IFNAMSIZ, NUL-padded
	copy(ifn, p.Veth)
	// Concatenated keys pad each field to 4 bytes.
	macKey := append(append([]byte{}, mac...), 0, 0)
	g := groupID(p.Group)
	t := &nftables.Table{Name: f.table, Family: nftables.TableFamilyBridge}
	for _, e := range []struct {
		set  string
		elem nftables.SetElement
	}{
		{"ports", nftables.SetElement{Key: ifn}},
		{"port_mac", nftables.SetElement{Key: append(append([]byte{}, ifn...), macKey...)}},
		{"port_ip", nftables.SetElement{Key: append(append([]byte{}, ifn...), ip...)}},
		{"port_fwd", nftables.SetElement{Key: ifn, VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: "fwd_" + g}}},
		{"port_out", nftables.SetElement{Key: ifn, VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: "out_" + g}}},
		{"tp_" + g, nftables.SetElement{Key: ifn}},
		{"tip_" + g, nftables.SetElement{Key: ip}},
	} {
		s := &nftables.Set{Table: t, Name: e.set, IsMap: e.elem.VerdictData != nil}
		// Add, then (to delete) delete: a delete of an element that is
		// not there would fail the whole transaction.
		if err := c.SetAddElements(s, []nftables.SetElement{e.elem}); err != nil {
			return fmt.Errorf("set %s: %w", e.set, err)
		}
		if del {
			if err := c.SetDeleteElements(s, []nftables.SetElement{e.elem}); err != nil {
				return fmt.Errorf("set %s: %w", e.set, err)
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}
