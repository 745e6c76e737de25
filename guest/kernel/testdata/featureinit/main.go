// Command featureinit is TestGuestFeatures' /init: it checks, in the
// guest, what the agent and realistic images need from the kernel, prints
// one "CUBE-FEATURE <name> ok" or "CUBE-FEATURE <name> FAIL <why>" line
// per check and "CUBE-FEATURES-DONE", then reboots (which ends QEMU).
//
// The test boots it with a virtio-blk drive (serial cube-root) holding an
// erofs image with /hello (content "hello from erofs") and /dir/file, and a
// virtio-serial port named cube.agent.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "ns-child" {
		nsChild()
		return
	}
	check("mount-basics", mountBasics)
	check("proc-sys", func() error { _, err := os.Stat("/proc/sys/kernel/pid_max"); return err })
	check("virtio-drivers", virtioDrivers)
	check("erofs-drive", erofsDrive)
	check("overlayfs", overlay)
	check("cgroup2", cgroup2)
	check("namespaces", namespaces)
	check("sysv-shm", shm)
	check("posix-mqueue", mqueue)
	check("seccomp-filter", seccomp)
	check("inotify", func() error {
		fd, err := syscall.InotifyInit1(0)
		if err == nil {
			syscall.Close(fd)
		}
		return err
	})
	check("ipv6-listen", func() error {
		l, err := net.Listen("tcp6", "[::]:0")
		if err == nil {
			l.Close()
		}
		return err
	})
	check("af-vsock", func() error { return sock(40 /* AF_VSOCK */, syscall.SOCK_STREAM) })
	check("af-packet", func() error { return sock(syscall.AF_PACKET, syscall.SOCK_RAW) })
	check("af-unix", func() error { return sock(syscall.AF_UNIX, syscall.SOCK_STREAM) })
	check("virtio-port", virtioPort)
	check("devpts", devpts)
	fmt.Println("CUBE-FEATURES-DONE")
	syscall.Sync()
	_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
	select {}
}

func check(name string, f func() error) {
	if err := f(); err != nil {
		fmt.Printf("CUBE-FEATURE %s FAIL %v\n", name, err)
		return
	}
	fmt.Printf("CUBE-FEATURE %s ok\n", name)
}

func mount(src, dst, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(src, dst, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", src, dst, fstype, err)
	}
	return nil
}

func mountBasics() error {
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"}, {"tmpfs", "/tmp", "tmpfs"}, {"tmpfs", "/run", "tmpfs"},
	} {
		if err := mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return err
		}
	}
	return nil
}

func virtioDrivers() error {
	for _, d := range []string{"virtio_blk", "virtio_net", "virtio_console", "virtio_rng", "vmw_vsock_virtio_transport"} {
		if _, err := os.Stat("/sys/bus/virtio/drivers/" + d); err != nil {
			return fmt.Errorf("driver %s: %w", d, err)
		}
	}
	return nil
}

// drive finds the /dev node of the virtio-blk disk whose serial is s.
func drive(s string) (string, error) {
	m, _ := filepath.Glob("/sys/block/vd*/serial")
	for _, p := range m {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == s {
			return "/dev/" + filepath.Base(filepath.Dir(p)), nil
		}
	}
	return "", fmt.Errorf("no disk with serial %q among %v", s, m)
}

func erofsDrive() error {
	dev, err := drive("cube-root")
	if err != nil {
		return err
	}
	if err := mount(dev, "/mnt/lower", "erofs", syscall.MS_RDONLY, ""); err != nil {
		return err
	}
	b, err := os.ReadFile("/mnt/lower/hello")
	if err != nil || string(b) != "hello from erofs\n" {
		return fmt.Errorf("/hello = %q, %v", b, err)
	}
	return nil
}

func overlay() error {
	if err := mount("tmpfs", "/run/rw", "tmpfs", 0, ""); err != nil {
		return err
	}
	for _, d := range []string{"/run/rw/upper", "/run/rw/work"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := mount("overlay", "/mnt/root", "overlay", 0, "lowerdir=/mnt/lower,upperdir=/run/rw/upper,workdir=/run/rw/work"); err != nil {
		return err
	}
	if err := os.WriteFile("/mnt/root/new", []byte("x"), 0o644); err != nil {
		return err
	}
	// A removed and re-made lower dir needs an opaque xattr on the
	// tmpfs upper (trusted.overlay.opaque).
	if err := os.RemoveAll("/mnt/root/dir"); err != nil {
		return err
	}
	if err := os.Mkdir("/mnt/root/dir", 0o755); err != nil {
		return err
	}
	if _, err := os.Stat("/mnt/root/dir/file"); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("dir/file visible through an opaque dir: %v", err)
	}
	if _, err := os.Stat("/mnt/lower/dir/file"); err != nil {
		return fmt.Errorf("the lower layer changed: %v", err)
	}
	return nil
}

func cgroup2() error {
	if err := mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""); err != nil {
		return err
	}
	b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if err != nil {
		return err
	}
	have := strings.Fields(string(b))
	for _, c := range []string{"cpu", "memory", "pids"} {
		if !contains(have, c) {
			return fmt.Errorf("controller %s missing from %v", c, have)
		}
	}
	if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+cpu +memory +pids"), 0); err != nil {
		return err
	}
	if err := os.Mkdir("/sys/fs/cgroup/c1", 0o755); err != nil {
		return err
	}
	for f, v := range map[string]string{"memory.max": "67108864", "pids.max": "64", "cpu.max": "50000 100000"} {
		if err := os.WriteFile("/sys/fs/cgroup/c1/"+f, []byte(v), 0); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/c1/memory.events"); err != nil {
		return err
	}
	return nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func namespaces() error {
	cmd := exec.Command("/init", "ns-child")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
		syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "pid=1 host=child" {
		return fmt.Errorf("child says %q", got)
	}
	return nil
}

func nsChild() {
	if err := syscall.Sethostname([]byte("child")); err != nil {
		fmt.Println("sethostname:", err)
		os.Exit(1)
	}
	// pivot_root needs a private mount tree.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		fmt.Println("make-private:", err)
		os.Exit(1)
	}
	h, _ := os.Hostname()
	fmt.Printf("pid=%d host=%s\n", os.Getpid(), h)
}

func shm() error {
	id, _, e := syscall.Syscall(syscall.SYS_SHMGET, 0 /* IPC_PRIVATE */, 4096, 0o1000|0o600 /* IPC_CREAT */)
	if e != 0 {
		return fmt.Errorf("shmget: %v", e)
	}
	_, _, e = syscall.Syscall(syscall.SYS_SHMCTL, id, 0 /* IPC_RMID */, 0)
	if e != 0 {
		return fmt.Errorf("shmctl: %v", e)
	}
	return nil
}

func mqueue() error {
	name, _ := syscall.BytePtrFromString("cube")
	fd, _, e := syscall.Syscall6(syscall.SYS_MQ_OPEN, uintptr(unsafe.Pointer(name)), uintptr(syscall.O_RDWR|syscall.O_CREAT), 0o600, 0, 0, 0)
	if e != 0 {
		return fmt.Errorf("mq_open: %v", e)
	}
	syscall.Close(int(fd))
	_, _, e = syscall.Syscall(syscall.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(name)), 0, 0)
	if e != 0 {
		return fmt.Errorf("mq_unlink: %v", e)
	}
	return nil
}

func seccomp() error {
	b, err := os.ReadFile("/proc/sys/kernel/seccomp/actions_avail")
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "errno") {
		return fmt.Errorf("actions_avail = %q", b)
	}
	return nil
}

func sock(family, typ int) error {
	fd, err := syscall.Socket(family, typ, 0)
	if err != nil {
		return err
	}
	return syscall.Close(fd)
}

func virtioPort() error {
	m, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, p := range m {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == "cube.agent" {
			dev := "/dev/" + filepath.Base(filepath.Dir(p))
			if _, err := os.Stat(dev); err != nil {
				return err
			}
			return nil
		}
	}
	return fmt.Errorf("no virtio port named cube.agent among %v", m)
}

func devpts() error {
	if err := mount("devpts", "/dev/pts", "devpts", 0, "newinstance,ptmxmode=0666"); err != nil {
		return err
	}
	f, err := os.OpenFile("/dev/pts/ptmx", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}
