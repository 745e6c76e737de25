//go:build linux

package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The random(4) ioctls (linux/random.h); x/sys/unix does not define them.
const (
	rndAddEntropy  = 0x40085203 // _IOW('R', 0x03, int[2])
	rndReseedCRNG  = 0x5207     // _IO('R', 0x07)
	randPoolHeader = 8          // struct rand_pool_info's entropy_count and buf_size
)

// randPoolInfo is struct rand_pool_info for RNDADDENTROPY: entropy_count
// (the bits credited: every byte the host sent is random), buf_size in
// bytes, then the bytes.
func randPoolInfo(entropy []byte) []byte {
	b := make([]byte, randPoolHeader+len(entropy))
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(entropy)*8))
	binary.NativeEndian.PutUint32(b[4:8], uint32(len(entropy)))
	copy(b[randPoolHeader:], entropy)
	return b
}

// reseedKernelRNG mixes entropy (if any) into the kernel's input pool and
// then makes the CRNG reseed from it at once: RNDADDENTROPY alone would
// leave the CRNG on its old key until its next scheduled reseed (up to a
// minute), so two clones of one template would draw the same bytes until
// then. RNDRESEEDCRNG bumps the base CRNG's generation, and every per-cpu
// CRNG rekeys on its next use. ENODATA (the CRNG not yet seeded, so there
// is nothing to reseed) is not an error: nothing drew from it either; it
// returns reseeded false then.
func reseedKernelRNG(entropy []byte) (reseeded bool, err error) {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return false, fmt.Errorf("reseed the kernel rng: %w", err)
	}
	defer f.Close()
	if len(entropy) > 0 {
		info := randPoolInfo(entropy)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndAddEntropy, uintptr(unsafe.Pointer(&info[0])))
		if errno != 0 {
			return false, fmt.Errorf("reseed the kernel rng: RNDADDENTROPY: %w", errno)
		}
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndReseedCRNG, 0)
	switch {
	case errors.Is(errno, unix.ENODATA):
		return false, nil
	case errno != 0:
		return false, fmt.Errorf("reseed the kernel rng: RNDRESEEDCRNG: %w", errno)
	}
	return true, nil
}
