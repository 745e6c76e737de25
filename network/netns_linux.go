package network

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// makeSharedMount turns dir into a shared mount point, bind-mounting it on
// itself first if it is not a mount point yet. This is what `ip netns add`
// does for /run/netns: namespaces pinned under dir later propagate to mount
// namespaces cloned from ours (the shim's, runc's), so they can open them.
//
// dir is made 0700: a pinned namespace file reads as 0444 (nsfs), and a
// local user who could open one would keep a deleted instance's network
// namespace alive.
func makeSharedMount(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create netns dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("netns dir: %w", err)
	}
	for bound := false; ; bound = true {
		err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		// EINVAL: dir is not a mount point yet.
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("make %s a shared mount: %w", dir, err)
		}
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s on itself: %w", dir, err)
		}
	}
}

// pinNetNS creates a network namespace with lo up and bind-mounts it on
// path, which must not exist. The namespace lives as long as the mount (or
// a process in it). On error nothing is left behind.
func pinNetNS(path string) (err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns pin: %w", err)
	}
	f.Close()
	defer func() {
		if err != nil {
			unmountAndRemove(path)
		}
	}()

	// unshare and setns act on the calling thread only, so this runs on a
	// dedicated, locked thread. The thread is handed back to the scheduler
	// only once it is provably in its original namespace again; otherwise
	// the goroutine exits still locked and the runtime destroys the thread.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored, err := inNewNetNS(path)
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// inNewNetNS moves the calling (locked) thread into a new network namespace,
// pins it on path, brings lo up, and moves the thread back. restored reports
// whether the thread is in its original namespace.
func inNewNetNS(path string) (restored bool, err error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("open current netns: %w", err)
	}
	defer unix.Close(orig)

	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("create netns: %w", err)
	}
	err = unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
	if err != nil {
		err = fmt.Errorf("pin netns on %s: %w", path, err)
	} else if lerr := setLinkUp("lo"); lerr != nil {
		err = fmt.Errorf("bring lo up in new netns: %w", lerr)
	}
	if serr := unix.Setns(orig, unix.CLONE_NEWNET); serr != nil {
		return false, errors.Join(err, fmt.Errorf("return to host netns: %w", serr))
	}
	return true, err
}

// setLinkUp sets IFF_UP on the named interface of the calling thread's
// network namespace.
func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// isPinnedNetNS reports whether path is a mounted network namespace (and
// not a leftover empty file, e.g. after a reboot emptied the mount table).
func isPinnedNetNS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// unmountAndRemove removes a pin; missing pieces are not errors.
func unmountAndRemove(path string) error {
	// EINVAL: not a mount point (already unmounted); ENOENT: no file.
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove netns pin %s: %w", path, err)
	}
	return nil
}
