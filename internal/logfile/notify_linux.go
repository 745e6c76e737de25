package logfile

import (
	"bytes"
	"context"
	"encoding/binary"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// dirWatch wakes a follower at once when the live log grows or is marked
// ended, so it need not poll for those. Rotations are left to the poll:
// waking in the middle of the writer's renames would only make the
// follower race them. It is an inotify instance read by one goroutine,
// which an eventfd ends when the follower's context is done.
type dirWatch struct {
	fd int
	ch chan struct{}
}

// watchDir starts watching the directory of path; nil when inotify is not
// available (the follower then polls).
func watchDir(ctx context.Context, path string) *dirWatch {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return nil
	}
	mask := uint32(unix.IN_MODIFY | unix.IN_CREATE)
	live, end := filepath.Base(path), filepath.Base(endPath(path))
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), mask); err != nil {
		unix.Close(fd)
		return nil
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(fd)
		return nil
	}
	d := &dirWatch{fd: fd, ch: make(chan struct{}, 1)}
	go func() {
		<-ctx.Done()
		var one [8]byte
		one[0] = 1
		_, _ = unix.Write(wake, one[:])
	}()
	go func() {
		defer unix.Close(fd)
		defer unix.Close(wake)
		buf := make([]byte, 4096)
		for {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
			if _, err := unix.Poll(pfd, -1); err != nil {
				if err == unix.EINTR {
					continue
				}
				return
			}
			if pfd[1].Revents != 0 {
				return // ctx is done
			}
			n, err := unix.Read(fd, buf)
			if err != nil && err != unix.EINTR && err != unix.EAGAIN {
				return
			}
			if wakes(buf[:max(n, 0)], live, end) {
				select {
				case d.ch <- struct{}{}:
				default:
				}
			}
		}
	}()
	return d
}

// wakes reports whether the inotify events in b include a write to the
// live file or the creation of the end mark.
func wakes(b []byte, live, end string) bool {
	for len(b) >= unix.SizeofInotifyEvent {
		mask := binary.NativeEndian.Uint32(b[4:8])
		n := int(binary.NativeEndian.Uint32(b[12:16]))
		if len(b) < unix.SizeofInotifyEvent+n {
			return true // cut short: wake to be safe
		}
		name := string(bytes.TrimRight(b[unix.SizeofInotifyEvent:unix.SizeofInotifyEvent+n], "\x00"))
		b = b[unix.SizeofInotifyEvent+n:]
		if (mask&unix.IN_MODIFY != 0 && name == live) || (mask&unix.IN_CREATE != 0 && name == end) || mask&unix.IN_Q_OVERFLOW != 0 {
			return true
		}
	}
	return false
}
