package runc

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsPins are the files the sandbox's shared namespaces are bind-mounted on.
// An empty net means the node supplied the network namespace.
type nsPins struct {
	ipc, uts, net string
}

// pinNamespaces creates the sandbox's IPC and UTS namespaces (and a network
// namespace when pins.net is set), sets the hostname in the new UTS
// namespace, and pins each by bind-mounting /proc/<pid>/task/<tid>/ns/<kind>
// onto its file, so the namespaces outlive the thread that made them.
//
// Namespaces belong to a thread, not to the process, so the work is done by
// a goroutine locked to its OS thread that never unlocks: when it returns
// the Go runtime terminates that thread instead of handing a thread that
// lives in foreign namespaces to other goroutines. The runtime never clones
// new threads from a locked thread (it hands that to its template thread),
// so the namespaces do not leak into the rest of the process either. The
// mount namespace is not unshared, so the bind mounts land in the caller's
// mount namespace where runc can see them.
func pinNamespaces(hostname string, pins nsPins) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread must die with this goroutine.
		errc <- pinOnThisThread(hostname, pins)
	}()
	return <-errc
}

func pinOnThisThread(hostname string, pins nsPins) error {
	flags := unix.CLONE_NEWIPC | unix.CLONE_NEWUTS
	if pins.net != "" {
		flags |= unix.CLONE_NEWNET
	}
	if err := unix.Unshare(flags); err != nil {
		return fmt.Errorf("unshare namespaces: %w (creating namespaces needs root)", err)
	}
	if hostname != "" {
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", hostname, err)
		}
	}
	if pins.net != "" {
		// A fresh network namespace has its loopback down; containers of a
		// sandbox talk to each other over 127.0.0.1, so bring it up.
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	self := fmt.Sprintf("/proc/%d/task/%d/ns/", os.Getpid(), unix.Gettid())
	for kind, target := range map[string]string{"ipc": pins.ipc, "uts": pins.uts, "net": pins.net} {
		if target == "" {
			continue
		}
		if err := bindNamespace(self+kind, target); err != nil {
			return err
		}
	}
	return nil
}

func bindNamespace(src, target string) error {
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create namespace pin %s: %w", target, err)
	}
	f.Close()
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("pin namespace %s on %s: %w", src, target, err)
	}
	return nil
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up loopback: read flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	return nil
}

// unpinNamespace unmounts a pinned namespace (dropping the last reference
// when no process is left in it) and removes its file.
func unpinNamespace(path string) error {
	if path == "" {
		return nil
	}
	if err := unmountAll(path); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove namespace pin: %w", err)
	}
	return nil
}
