package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// drives serves the drive-replacement test: for each line the host
// writes on the cube.agent port, it prints the first 16 bytes of every
// drive and writes the line at the start of each writable one, reading
// and writing around the page cache (O_DIRECT), so what it sees is what
// the host's file holds now.
func drives() {
	syscall.Mount("sysfs", "/sys", "sysfs", 0, "")
	syscall.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	port, err := agentPort()
	if err != nil {
		fmt.Printf("DRIVES error %v\n", err)
		return
	}
	fmt.Println("CUBE-DRIVES-READY")
	lines := bufio.NewScanner(port)
	for lines.Scan() {
		word := lines.Text()
		blocks, _ := filepath.Glob("/sys/block/vd*")
		for _, b := range blocks {
			serial, _ := os.ReadFile(b + "/serial")
			ro, _ := os.ReadFile(b + "/ro")
			fmt.Printf("DRIVE %s %s %s\n", word, strings.TrimSpace(string(serial)), readDirect("/dev/"+filepath.Base(b)))
			if strings.TrimSpace(string(ro)) == "0" {
				writeDirect("/dev/"+filepath.Base(b), word)
			}
		}
		fmt.Printf("CUBE-DRIVES-DONE %s\n", word)
	}
	fmt.Printf("DRIVES port closed: %v\n", lines.Err())
}

func agentPort() (*os.File, error) {
	ports, _ := filepath.Glob("/sys/class/virtio-ports/*")
	for _, p := range ports {
		if name, _ := os.ReadFile(p + "/name"); strings.TrimSpace(string(name)) == "cube.agent" {
			return os.OpenFile("/dev/"+filepath.Base(p), os.O_RDWR, 0)
		}
	}
	return nil, fmt.Errorf("no cube.agent port")
}

// aligned is a page-aligned buffer of one sector, as O_DIRECT needs.
func aligned() []byte {
	b, _ := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	return b[:512]
}

func readDirect(dev string) string {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return "open-error"
	}
	defer unix.Close(fd)
	b := aligned()
	if _, err := unix.Pread(fd, b, 0); err != nil {
		return "read-error"
	}
	return fmt.Sprintf("%q", strings.TrimRight(string(b[:16]), "\x00"))
}

func writeDirect(dev, word string) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		fmt.Printf("WRITE %s open-error\n", dev)
		return
	}
	defer unix.Close(fd)
	b := aligned()
	copy(b, word)
	if _, err := unix.Pwrite(fd, b, 0); err != nil {
		fmt.Printf("WRITE %s %v\n", dev, err)
	}
}
