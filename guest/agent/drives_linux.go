package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
)

// findVirtioDrive finds the block device whose virtio-blk serial is
// serial (QEMU's serial=, /sys/block/vdX/serial): drives are found by
// name, never by the order they were probed in.
func findVirtioDrive(serial string) (string, error) {
	entries, err := os.ReadDir("/sys/block")
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "serial"))
		if err == nil && strings.TrimSpace(string(b)) == serial {
			return filepath.Join("/dev", e.Name()), nil
		}
	}
	return "", fmt.Errorf("%w: no block device with serial %q (is the drive attached with serial=%s?)", errdefs.ErrNotFound, serial, serial)
}

// mountDrives mounts the writable drive at StateDir/rw and each image
// drive read-only at StateDir/images/<serial>.
// Preconditions: a.mu is held.
func (a *Agent) mountDrives(drives []*agentapi.Drive) error {
	for _, d := range drives {
		dev, err := a.cfg.FindDrive(d.GetSerial())
		if err != nil {
			return err
		}
		target := a.path("rw")
		flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
		if d.GetRole() == agentapi.DriveRole_DRIVE_ROLE_IMAGE {
			target = a.path("images", d.GetSerial())
			flags |= unix.MS_RDONLY
		}
		if err := os.MkdirAll(target, 0o700); err != nil {
			return err
		}
		if err := unix.Mount(dev, target, d.GetFsType(), flags, mountData(d)); err != nil {
			return fmt.Errorf("mount drive %q (%s, %s): %w", d.GetSerial(), dev, d.GetFsType(), err)
		}
		a.mounted[d.GetSerial()] = target
	}
	return nil
}

// mountData is a drive's mount options. The writable ext4 drive is
// mounted with noinit_itable, as the runc backend mounts its layer: the
// host makes it with lazy_itable_init (sandbox/disk), and without the
// option the guest kernel's ext4lazyinit thread would zero every inode
// table after the mount, emulated instruction by instruction under TCG,
// during the container's start, and allocate the sparse file on the host.
func mountData(d *agentapi.Drive) string {
	if d.GetRole() == agentapi.DriveRole_DRIVE_ROLE_WRITABLE && d.GetFsType() == "ext4" {
		return "noinit_itable"
	}
	return ""
}

// rootfs mounts (once) a container's root: an overlay of its image drive
// under an upper dir on the writable drive (on the state tmpfs without
// one). A restart keeps what the container wrote, as with runc.
func (a *Agent) rootfs(spec *agentapi.ContainerSpec) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rootfsLocked(spec)
}

// rootfsLocked is rootfs with a.mu held. Setup mounts every container's
// overlay up front, as runc's Create does: a container started late must
// still get its root when the others have filled the writable layer
// (overlayfs falls back to read-only when it cannot make its work dir).
func (a *Agent) rootfsLocked(spec *agentapi.ContainerSpec) (string, error) {
	name := spec.GetName()
	target := a.path("containers", name, "rootfs")
	if mounted(target) {
		return target, nil
	}
	lower, ok := a.mounted[spec.GetImageDrive()]
	_, hasRW := a.mounted[a.writableSerial()]
	if !ok {
		return "", fmt.Errorf("%w: container %q has no image drive", errdefs.ErrInvalid, name)
	}
	base := a.path("containers", name)
	if hasRW {
		base = a.path("rw", "containers", name)
	}
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	for _, d := range []string{upper, work, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return "", fmt.Errorf("mount the overlay of container %q: %w", name, err)
	}
	return target, nil
}

// writableSerial is the serial of the declared writable drive, "" if none.
// Preconditions: a.mu is held.
func (a *Agent) writableSerial() string {
	for _, d := range a.setup.GetDrives() {
		if d.GetRole() == agentapi.DriveRole_DRIVE_ROLE_WRITABLE {
			return d.GetSerial()
		}
	}
	return "\x00none"
}

func mounted(path string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(path, &st) != nil || unix.Stat(filepath.Dir(path), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// unmountAll unmounts the containers' overlays, then the drives (the
// writable one last), so that ext4 is clean when the VM ends.
func (a *Agent) unmountAll() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unmountAllLocked()
}

// unmountAllLocked is unmountAll with a.mu held.
func (a *Agent) unmountAllLocked() error {
	var errs []error
	entries, _ := os.ReadDir(a.path("containers"))
	for _, e := range entries {
		p := a.path("containers", e.Name(), "rootfs")
		if mounted(p) {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
				errs = append(errs, err)
			}
		}
	}
	var targets []string
	for _, t := range a.mounted {
		targets = append(targets, t)
	}
	slices.Sort(targets) // .../images/* before .../rw
	for _, t := range targets {
		if err := unix.Unmount(t, 0); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// writeEtc writes the files every container gets over its /etc.
// Preconditions: a.mu is held.
func (a *Agent) writeEtc(req *agentapi.SetupRequest) error {
	dir := a.path("etc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var resolv strings.Builder
	n := req.GetNetwork()
	for _, s := range n.GetDnsServers() {
		fmt.Fprintf(&resolv, "nameserver %s\n", s)
	}
	if len(n.GetDnsSearch()) > 0 {
		fmt.Fprintf(&resolv, "search %s\n", strings.Join(n.GetDnsSearch(), " "))
	}
	if len(n.GetDnsOptions()) > 0 {
		fmt.Fprintf(&resolv, "options %s\n", strings.Join(n.GetDnsOptions(), " "))
	}
	host := req.GetHostname()
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if host != "" {
		if addr, _, ok := strings.Cut(n.GetIpv4Cidr(), "/"); ok {
			hosts += fmt.Sprintf("%s\t%s\n", addr, host)
		} else {
			hosts += fmt.Sprintf("127.0.1.1\t%s\n", host)
		}
	}
	files := map[string]string{"resolv.conf": resolv.String(), "hosts": hosts, "hostname": host + "\n"}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) etcFiles() map[string]string {
	out := map[string]string{}
	for _, n := range []string{"resolv.conf", "hosts", "hostname"} {
		out[n] = a.path("etc", n)
	}
	return out
}
