package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Raw frames for the attack tests: an attacker inside an instance's
// namespace writes whole Ethernet frames on its eth0 (AF_PACKET), as a
// container with CAP_NET_RAW could, and a peer reads every frame its eth0
// receives.

const (
	etherIPv4 = 0x0800
	etherARP  = 0x0806
	etherIPv6 = 0x86dd
	etherVLAN = 0x8100
)

// rawSock is an AF_PACKET socket on eth0 of an instance's namespace.
type rawSock struct {
	fd  int
	mac net.HardwareAddr // eth0's
}

// openRaw opens a raw socket on eth0 inside netns; it is closed in
// t.Cleanup.
func openRaw(t *testing.T, netns string) *rawSock {
	t.Helper()
	var s rawSock
	err := inNetNS(netns, func() error {
		ifc, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		s.mac = ifc.HardwareAddr
		proto := htons(unix.ETH_P_ALL)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifc.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		s.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("raw socket in %s: %v", netns, err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return &s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (s *rawSock) send(t *testing.T, frame []byte) {
	t.Helper()
	if _, err := unix.Write(s.fd, frame); err != nil {
		t.Fatalf("send raw frame: %v", err)
	}
}

// waitFor reads frames until match returns true or timeout passes; every
// frame read is also handed to seen (if set).
func (s *rawSock) waitFor(timeout time.Duration, seen func(frame), match func(frame) bool) bool {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false
		}
		f := parseFrame(buf[:n])
		if seen != nil {
			seen(f)
		}
		if match(f) {
			return true
		}
	}
	return false
}

// frame is what the tests look at in a received frame.
type frame struct {
	src, dst  net.HardwareAddr
	ethertype uint16
	// IPv4
	ipSrc, ipDst netip.Addr
	proto        uint8
	srcPort      uint16
	dstPort      uint16
	tcpFlags     uint8
	icmpType     uint8
	icmpID       uint16
	payload      []byte // UDP payload
	// ARP
	arpOp        uint16
	arpSenderMAC net.HardwareAddr
	arpSenderIP  netip.Addr
}

func parseFrame(b []byte) frame {
	var f frame
	if len(b) < 14 {
		return f
	}
	f.dst, f.src = net.HardwareAddr(b[0:6]), net.HardwareAddr(b[6:12])
	f.ethertype = binary.BigEndian.Uint16(b[12:14])
	p := b[14:]
	switch f.ethertype {
	case etherIPv4:
		if len(p) < 20 {
			return f
		}
		ihl := int(p[0]&0x0f) * 4
		f.proto = p[9]
		f.ipSrc, _ = netip.AddrFromSlice(p[12:16])
		f.ipDst, _ = netip.AddrFromSlice(p[16:20])
		if len(p) < ihl+8 {
			return f
		}
		l4 := p[ihl:]
		switch f.proto {
		case unix.IPPROTO_TCP:
			f.srcPort, f.dstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
			if len(l4) >= 14 {
				f.tcpFlags = l4[13]
			}
		case unix.IPPROTO_UDP:
			f.srcPort, f.dstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
			f.payload = l4[8:]
		case unix.IPPROTO_ICMP:
			f.icmpType = l4[0]
			f.icmpID = binary.BigEndian.Uint16(l4[4:6])
		}
	case etherARP:
		if len(p) < 28 {
			return f
		}
		f.arpOp = binary.BigEndian.Uint16(p[6:8])
		f.arpSenderMAC = net.HardwareAddr(p[8:14])
		f.arpSenderIP, _ = netip.AddrFromSlice(p[14:18])
	}
	return f
}

const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

func (f frame) isSYNACK(from netip.Addr, port uint16) bool {
	return f.ethertype == etherIPv4 && f.proto == unix.IPPROTO_TCP && f.ipSrc == from &&
		f.srcPort == port && f.tcpFlags&(tcpSYN|tcpACK) == tcpSYN|tcpACK
}

func ether(dst, src net.HardwareAddr, ethertype uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], ethertype)
	return append(b, payload...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func ipv4(src, dst netip.Addr, proto uint8, l4 []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:4], uint16(20+len(l4)))
	h[8] = 64
	h[9] = proto
	s4, d4 := src.As4(), dst.As4()
	copy(h[12:16], s4[:])
	copy(h[16:20], d4[:])
	binary.BigEndian.PutUint16(h[10:12], checksum(h))
	return append(h, l4...)
}

// l4sum is the TCP/UDP checksum over the IPv4 pseudo-header and seg.
func l4sum(src, dst netip.Addr, proto uint8, seg []byte) uint16 {
	s4, d4 := src.As4(), dst.As4()
	ph := append(append(append([]byte{}, s4[:]...), d4[:]...), 0, proto, byte(len(seg)>>8), byte(len(seg)))
	return checksum(append(ph, seg...))
}

// tcpSYNFrame is a TCP SYN from src:sport to dst:dport, to the MAC dstMAC.
func tcpSYNFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) []byte {
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:2], sport)
	binary.BigEndian.PutUint16(seg[2:4], dport)
	binary.BigEndian.PutUint32(seg[4:8], 0x01020304)
	seg[12] = 5 << 4
	seg[13] = tcpSYN
	binary.BigEndian.PutUint16(seg[14:16], 64240)
	binary.BigEndian.PutUint16(seg[16:18], l4sum(src, dst, unix.IPPROTO_TCP, seg))
	return ether(dstMAC, srcMAC, etherIPv4, ipv4(src, dst, unix.IPPROTO_TCP, seg))
}

// udpFrame carries payload from src to dst, port 9 (discard) to 9.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, payload string) []byte {
	seg := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(seg[0:2], 9)
	binary.BigEndian.PutUint16(seg[2:4], 9)
	binary.BigEndian.PutUint16(seg[4:6], uint16(8+len(payload)))
	seg = append(seg, payload...)
	binary.BigEndian.PutUint16(seg[6:8], l4sum(src, dst, unix.IPPROTO_UDP, seg))
	return ether(dstMAC, srcMAC, etherIPv4, ipv4(src, dst, unix.IPPROTO_UDP, seg))
}

// icmpEchoFrame is an echo request with id.
func icmpEchoFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, id uint16) []byte {
	m := make([]byte, 16)
	m[0] = 8 // echo request
	binary.BigEndian.PutUint16(m[4:6], id)
	binary.BigEndian.PutUint16(m[6:8], 1)
	copy(m[8:], "cubeping")
	binary.BigEndian.PutUint16(m[2:4], checksum(m))
	return ether(dstMAC, srcMAC, etherIPv4, ipv4(src, dst, unix.IPPROTO_ICMP, m))
}

// arpFrame is an ARP packet (op 1 request, 2 reply) in a frame from
// frameSrc to dstMAC.
func arpFrame(frameSrc, dstMAC net.HardwareAddr, op uint16, senderMAC net.HardwareAddr, senderIP netip.Addr, targetMAC net.HardwareAddr, targetIP netip.Addr) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:2], 1)
	binary.BigEndian.PutUint16(p[2:4], etherIPv4)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], op)
	copy(p[8:14], senderMAC)
	s4, t4 := senderIP.As4(), targetIP.As4()
	copy(p[14:18], s4[:])
	copy(p[18:24], targetMAC)
	copy(p[24:28], t4[:])
	return ether(dstMAC, frameSrc, etherARP, p)
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(fmt.Sprintf("mac %q: %v", s, err))
	}
	return hw
}
