package network

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// hostRoute is one IPv4 route of the host's main table.
type hostRoute struct {
	Dev string
	Dst netip.Prefix
}

// hostRoutes reads the main IPv4 routing table from /proc/net/route
// (enough for an overlap check, and no netlink dependency).
func hostRoutes() ([]hostRoute, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil, fmt.Errorf("read host routes: %w", err)
	}
	defer f.Close()
	var routes []hostRoute
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		dst, err1 := parseProcAddr(fields[1])
		mask, err2 := parseProcAddr(fields[7])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("read host routes: malformed line %q", sc.Text())
		}
		ones := bits.OnesCount32(binary.BigEndian.Uint32(mask.AsSlice()))
		routes = append(routes, hostRoute{Dev: fields[0], Dst: netip.PrefixFrom(dst, ones).Masked()})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read host routes: %w", err)
	}
	return routes, nil
}

// parseProcAddr decodes an address of /proc/net/route: 8 hex digits of
// the address in host byte order.
func parseProcAddr(s string) (netip.Addr, error) {
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return netip.Addr{}, err
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], uint32(v))
	return netip.AddrFrom4(b), nil
}

// checkSubnetFree refuses a subnet that overlaps a host route other than
// the default route and routes through our own bridge: instances on it
// would shadow (or be shadowed by) real networks.
func checkSubnetFree(subnet netip.Prefix, bridge string) error {
	routes, err := hostRoutes()
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Dev == bridge || r.Dst.Bits() == 0 {
			continue
		}
		if r.Dst.Overlaps(subnet) {
			return fmt.Errorf("subnet %s overlaps host route %s on %s: choose another network subnet", subnet, r.Dst, r.Dev)
		}
	}
	return nil
}
