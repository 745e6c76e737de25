package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// devices reports what the host gave the guest, for the driver's device
// test: every virtio-blk drive's serial and read-only flag, whether a
// write to a read-only drive is refused, eth0's MAC, a frame sent out of
// eth0, and a line on the cube.agent virtio-serial port.
func devices() {
	syscall.Mount("sysfs", "/sys", "sysfs", 0, "")
	syscall.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	cmdline, _ := os.ReadFile("/proc/cmdline")
	fmt.Printf("CMDLINE %s", cmdline)
	blocks, _ := filepath.Glob("/sys/block/vd*")
	for _, b := range blocks {
		serial, _ := os.ReadFile(b + "/serial")
		ro, _ := os.ReadFile(b + "/ro")
		name := filepath.Base(b)
		fmt.Printf("DRIVE %s %s ro=%s\n", name, strings.TrimSpace(string(serial)), strings.TrimSpace(string(ro)))
		f, err := os.OpenFile("/dev/"+name, os.O_RDWR, 0)
		if err != nil {
			fmt.Printf("OPEN %s denied\n", strings.TrimSpace(string(serial)))
			continue
		}
		_, err = f.WriteAt([]byte("WRITTEN-BY-GUEST"), 0)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		fmt.Printf("WRITE %s %v\n", strings.TrimSpace(string(serial)), err == nil)
	}
	mac, _ := os.ReadFile("/sys/class/net/eth0/address")
	fmt.Printf("MAC %s\n", strings.TrimSpace(string(mac)))
	// The virtio-net feature bits the device offered ('1' at bit 0:
	// VIRTIO_NET_F_CSUM, at bit 11: HOST_TSO4).
	feat, _ := os.ReadFile("/sys/class/net/eth0/device/features")
	if f := strings.TrimSpace(string(feat)); len(f) > 11 {
		fmt.Printf("NETFEAT csum=%c tso4=%c\n", f[0], f[11])
	}
	if err := sendFrame("eth0", os.Getenv("cubepayload")); err != nil {
		fmt.Printf("FRAME error %v\n", err)
	} else {
		fmt.Printf("FRAME sent\n")
	}
	ports, _ := filepath.Glob("/sys/class/virtio-ports/*")
	for _, p := range ports {
		name, _ := os.ReadFile(p + "/name")
		if strings.TrimSpace(string(name)) != "cube.agent" {
			continue
		}
		f, err := os.OpenFile("/dev/"+filepath.Base(p), os.O_RDWR, 0)
		if err != nil {
			fmt.Printf("AGENT error %v\n", err)
			continue
		}
		_, err = f.Write([]byte("hello-agent\n"))
		f.Close()
		fmt.Printf("AGENT wrote %v\n", err == nil)
	}
	fmt.Println("CUBE-DEVICES-DONE")
}

func sendFrame(ifname, payload string) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, _ := unix.NewIfreq(ifname)
	ifr.SetUint16(unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	f := make([]byte, 14, 64)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:], ifi.HardwareAddr)
	binary.BigEndian.PutUint16(f[12:], 0x88b5)
	f = append(f, payload...)
	return unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
}
