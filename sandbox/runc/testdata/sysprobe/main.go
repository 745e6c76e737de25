// Command sysprobe makes the syscalls a hostile container would try and
// prints one "name errno" line for each ("name 0" when it succeeded). The
// sandbox tests build it statically and run it inside a container, and on
// the host as the positive control. Arguments are designed to fail
// harmlessly where the syscall is allowed (bad flags, NULL pointers): the
// probe must never change the host.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

func main() {
	host := len(os.Args) > 1 && os.Args[1] == "host"
	probes := []struct {
		name string
		call func() error
	}{
		{"keyctl", func() error {
			_, _, e := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, uintptr(0xffffffff), 0)
			return errnoErr(e)
		}},
		{"add_key", func() error {
			_, _, e := unix.Syscall6(unix.SYS_ADD_KEY, 0, 0, 0, 0, 0, 0)
			return errnoErr(e)
		}},
		{"bpf", func() error {
			_, _, e := unix.Syscall(unix.SYS_BPF, ^uintptr(0), 0, 0)
			return errnoErr(e)
		}},
		{"perf_event_open", func() error {
			_, _, e := unix.Syscall6(unix.SYS_PERF_EVENT_OPEN, 0, 0, ^uintptr(0), ^uintptr(0), 0, 0)
			return errnoErr(e)
		}},
		{"kexec_load", func() error {
			// Invalid flags: refused before anything is loaded or unloaded.
			_, _, e := unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0xffff0000, 0, 0)
			return errnoErr(e)
		}},
		{"open_by_handle_at", func() error {
			dirfd := unix.AT_FDCWD
			_, _, e := unix.Syscall(unix.SYS_OPEN_BY_HANDLE_AT, uintptr(dirfd), 0, 0)
			return errnoErr(e)
		}},
		{"raw-socket", func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"packet-socket", func() error {
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"icmp-dgram-socket", func() error { // unprivileged ping
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"tcp-socket", func() error { // the control: an allowed syscall
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
	}
	if !host {
		probes = append(probes, struct {
			name string
			call func() error
		}{"mount", func() error { return unix.Mount("none", "/tmp", "tmpfs", 0, "") }},
			struct {
				name string
				call func() error
			}{"umount", func() error { return unix.Unmount("/proc", unix.MNT_DETACH) }})
	}
	// Last: were it to succeed, the probes after it would run in the new
	// user namespace.
	probes = append(probes, struct {
		name string
		call func() error
	}{"unshare-user", func() error {
		runtime.LockOSThread()
		return unix.Unshare(unix.CLONE_NEWUSER)
	}})
	for _, p := range probes {
		err := p.call()
		var errno unix.Errno
		switch {
		case err == nil:
			fmt.Println(p.name, 0)
		case errors.As(err, &errno):
			fmt.Println(p.name, int(errno))
		default:
			fmt.Println(p.name, err)
		}
	}
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}
