//go:build linux

package runc

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// isSubreaper tells whether this process is a child subreaper.
// PR_GET_CHILD_SUBREAPER stores its answer through a pointer, which
// unix.Prctl cannot pass without unsafe.
func isSubreaper() bool {
	var v int32
	_, _, errno := unix.Syscall6(unix.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&v)), 0, 0, 0, 0)
	return errno == 0 && v != 0
}
