package tap

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Open opens the tap device name inside the network namespace at
// netnsPath ("" for the caller's own) and returns its queue file, ready to
// be handed to a VMM as a file descriptor: the VMM itself then needs no
// access to /dev/net/tun or to the namespace. A tap that Setup made
// persists; if there is none yet, Open makes one that lives as long as
// the returned file (and the VMM's copy of it), so a VM may boot before
// Setup wires its tap. Frames read or written on the file start with a
// virtio-net header (VNetHdrLen bytes until the VMM changes it with
// TUNSETVNETHDRSZ).
func Open(netnsPath, name string) (*os.File, error) {
	var f *os.File
	err := inNetNS(netnsPath, func() error {
		var err error
		if f, err = openTap(name); err != nil {
			return err
		}
		if err := noIPv6(name); err != nil {
			f.Close()
			f = nil
			return err
		}
		return nil
	})
	return f, err
}

// VNetHdrLen is the virtio-net header's default length on an Open file.
const VNetHdrLen = 10

func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %q: %w", name, err)
	}
	// IFF_VNET_HDR: every frame on this fd carries a virtio-net header,
	// which QEMU detects on an fd it is handed and then offers the guest
	// checksum and segmentation offloads (large frames cross the tap and
	// the tc redirect whole instead of MTU-sized).
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach to tap %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}

// inNetNS runs fn on a thread switched into the namespace at path ("":
// no switch). If the thread cannot be switched back it is left locked, so
// the runtime retires it instead of reusing it in the wrong namespace.
func inNetNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer unix.Close(target)
	runtime.LockOSThread()
	self, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer unix.Close(self)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	ferr := fn()
	if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("leave netns %s: %w", path, err) // thread stays locked: it dies with the goroutine
	}
	runtime.UnlockOSThread()
	return ferr
}

// OpenIsolated opens a tap named name in a network namespace of its own,
// made for it: no other interface, no address, nothing on the host can
// reach it, and the namespace ends with the tap's last file. A VM that
// has no network but must have a card (a template's clone has the
// template's devices) gets one this way.
func OpenIsolated(name string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	rc := make(chan result, 1)
	go func() {
		// Never unlocked: the thread, in its own namespace now, ends
		// with this goroutine instead of going back to the pool.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			rc <- result{nil, fmt.Errorf("tap: new netns: %w", err)}
			return
		}
		f, err := openTap(name)
		rc <- result{f, err}
	}()
	r := <-rc
	return r.f, r.err
}
