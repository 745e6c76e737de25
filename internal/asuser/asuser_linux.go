// Package asuser lets a test running as root act, for one call, as an
// unprivileged local user (nobody), to check what such a user can reach:
// sockets, files, ports. It is for tests only and depends on nothing of
// Cube's.
package asuser

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Nobody is the uid and gid of Debian's nobody user.
const Nobody = 65534

// Do runs fn on a fresh OS thread whose real, effective and file-system
// uid and gid are uid (with no supplementary groups and so no effective
// capabilities), and returns fn's error. Only that thread changes: the raw
// setresuid/setresgid calls below do not broadcast to the process the way
// syscall.Setuid does. The thread is thrown away afterwards, never reused.
func Do(uid int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread is never killed, only parked, and its
			// credentials are what ps and /proc show for the process.
			// Hold it here, so the goroutine below gets another thread.
			errc <- Do(uid, fn)
			runtime.UnlockOSThread()
			return
		}
		// Never unlocked: the goroutine ends locked, so the runtime kills
		// the thread instead of reusing it with changed credentials.
		errc <- onThisThread(uid, fn)
	}()
	return <-errc
}

func onThisThread(uid int, fn func() error) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
		return fmt.Errorf("setresgid: %w", e)
	}
	// All three uids non-zero: the kernel clears the thread's permitted
	// and effective capabilities, so it is as weak as a real login.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
		return fmt.Errorf("setresuid: %w", e)
	}
	return fn()
}

// RequireRoot skips t when the test does not run as root, or fails it
// under CI=true, where the Makefile runs every test as root.
func RequireRoot(t interface {
	Helper()
	Skip(...any)
	Fatal(...any)
}) {
	t.Helper()
	if unix.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root, and CI=true runs every test as root")
	}
	t.Skip("needs root to switch to an unprivileged user: run the tests as root (make test)")
}
