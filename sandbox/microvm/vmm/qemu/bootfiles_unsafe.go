//go:build linux

package qemu

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// remoteIovec is a struct iovec naming another process's memory: its base
// is an address there, not a pointer here.
type remoteIovec struct {
	base, len uint64
}

// pageOut is process_madvise(pidfd, ms, MADV_PAGEOUT): the kernel reclaims
// the pages of ms that only that process maps. It returns the bytes
// advised (not the bytes freed).
func pageOut(pidfd int, ms []mapping) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	iov := make([]remoteIovec, len(ms))
	for i, m := range ms {
		iov[i] = remoteIovec{m.start, m.end - m.start}
	}
	n, _, errno := unix.Syscall6(unix.SYS_PROCESS_MADVISE, uintptr(pidfd),
		uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)), unix.MADV_PAGEOUT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
