package tap

import (
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// tunGetDevNetns is TUNGETDEVNETNS, _IO('T', 227) (Linux 5.2): an fd of
// the namespace a tun device is in, from its queue file.
const tunGetDevNetns = 0x54e3

// Move moves the tap whose queue file is f, from whatever namespace it is
// in (one OpenIsolated made for it, that nothing else can name), into the
// network namespace at netnsPath, where Setup then wires it: a pooled VM
// keeps its card, and the card joins the instance's network. The tap
// keeps its name, which must be free there; the VMM's copy of f goes on
// working.
func Move(f *os.File, netnsPath string) error {
	fd, err := unix.IoctlRetInt(int(f.Fd()), tunGetDevNetns)
	if err != nil {
		return fmt.Errorf("tap: find the namespace of %s: %w", f.Name(), err)
	}
	from := netns.NsHandle(fd)
	defer from.Close()
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(int(f.Fd()), unix.TUNGETIFF, ifr); err != nil {
		return fmt.Errorf("tap: name of %s: %w", f.Name(), err)
	}
	name := ifr.Name()
	h, err := netlink.NewHandleAt(from)
	if err != nil {
		return fmt.Errorf("tap: netlink in the namespace of %s: %w", name, err)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("tap: look up %s: %w", name, err)
	}
	to, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("tap: open netns %s: %w", netnsPath, err)
	}
	defer to.Close()
	if err := h.LinkSetNsFd(link, int(to)); err != nil {
		return fmt.Errorf("tap: move %s into %s: %w", name, netnsPath, err)
	}
	return nil
}
