package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox/microvm/tap"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/jail"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/qmp"
	"golang.org/x/sys/unix"
)

// Options configure the driver.
type Options struct {
	// Binary is qemu-system-x86_64's path; "" looks it up in PATH.
	Binary string
	// Logger; nil discards.
	Logger *slog.Logger
	// KeepBootFiles leaves the kernel and initrd resident in QEMU after
	// boot (see releaseBootFiles); for A/B measurements.
	KeepBootFiles bool
}

// Driver is the QEMU microvm driver.
type Driver struct {
	binary string
	// lookMicrovm: look for the microvm-only build (see binaryFor) on
	// the first KVM guest; microvm is it ("" if none), microvmSeccomp
	// whether it can enforce -sandbox.
	lookMicrovm    bool
	microvmOnce    sync.Once
	microvm        string
	microvmSeccomp bool
	log            *slog.Logger
	keepBootFiles  bool

	mu sync.Mutex
	// files is each binary's jail content, found once; protected by mu.
	files map[string]*jailFiles
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a driver for the given QEMU binary.
func New(opts Options) (*Driver, error) {
	abs, err := ResolveBinary(opts.Binary)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{binary: abs, log: log.With("component", "qemu"), keepBootFiles: opts.KeepBootFiles, files: map[string]*jailFiles{}}
	d.lookMicrovm = opts.Binary == ""
	return d, nil
}

// ResolveBinary is the absolute path of the QEMU a driver of
// Options{Binary: bin} runs: bin, or qemu-system-x86_64 from PATH.
func ResolveBinary(bin string) (string, error) {
	if bin == "" {
		p, err := exec.LookPath("qemu-system-x86_64")
		if err != nil {
			return "", fmt.Errorf("qemu-system-x86_64 not found in PATH (apt-get install qemu-system-x86): %w", errdefs.ErrUnavailable)
		}
		bin = p
	}
	return filepath.Abs(bin)
}

// Start implements vmm.Driver.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.VM, error) {
	return d.StartVM(ctx, cfg)
}

// StartVM boots cfg and returns the concrete VM (for QMP and console
// access beyond vmm.VM). The steps, each undone in reverse on failure:
// validate → sockets → files (tap, drives) → cgroup → jailed QEMU → QMP
// handshake → cont.
func (d *Driver) StartVM(ctx context.Context, cfg vmm.Config) (_ *VM, retErr error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if accelOf(&cfg) == vmm.AccelKVM && d.lookMicrovm {
		d.microvmOnce.Do(func() {
			d.microvm, d.microvmSeccomp = findMicrovmBinary(ctx, d.binary)
			d.log.Info("qemu microvm build", "path", d.microvm, "sandbox", d.microvmSeccomp)
		})
	}
	binary := binaryFor(accelOf(&cfg), d.binary, d.microvm, d.microvmSeccomp)
	jf, err := d.jailFiles(binary)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{cfg.Kernel, cfg.Initrd} {
		if p == "" {
			continue
		}
		// The jailed QEMU reads them as its own uid.
		if st, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
		} else if st.Mode().Perm()&0o004 == 0 {
			return nil, fmt.Errorf("vm %s: %s must be world-readable (chmod a+r): the jailed vmm reads it: %w", cfg.ID, p, errdefs.ErrInvalid)
		}
	}
	v := &VM{
		migration: make(chan string, 16),
		id:        cfg.ID,
		log:       d.log.With("vm", cfg.ID),
		done:      make(chan struct{}),
		qmpPath:   filepath.Join(cfg.StateDir, "qmp.sock"),
		agent:     cfg.AgentSocket,
		jailDir:   filepath.Join(cfg.StateDir, "jail"),
		drives:    slotsOf(&cfg),
	}
	var cleanups []func()
	defer func() {
		if retErr != nil {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
			}
		}
	}()
	var files []*os.File // the VMM's fds 3..; ours are closed once it runs
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()

	// Sockets: listening before QEMU starts, handed over as fds, so
	// neither side races the other and the jail needs no socket path.
	for _, p := range []string{v.qmpPath, v.agent} {
		l, err := listenUnix(p)
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
		}
		cleanups = append(cleanups, func() { os.Remove(p) })
		f, err := l.File()
		l.Close() // the file is a dup; the socket stays listening
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	// RLIMIT_FSIZE: the largest file QEMU may write is a writable drive
	// or a snapshot of the guest's memory (migrate to an fd).
	maxFile := max(int64(cfg.MemoryMiB+64)<<20, cfg.MaxWritableBytes)
	if n := cfg.Net; n != nil {
		open := func() (*os.File, error) { return tap.Open(n.NetNS, n.Tap) }
		if n.Isolated {
			open = func() (*os.File, error) { return tap.OpenIsolated(n.Tap) }
		}
		if n.File != nil {
			open = func() (*os.File, error) {
				fd, err := unix.FcntlInt(n.File.Fd(), unix.F_DUPFD_CLOEXEC, 3)
				if err != nil {
					return nil, err
				}
				return os.NewFile(uintptr(fd), n.File.Name()), nil
			}
		}
		f, err := open()
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
		}
		files = append(files, f)
	}
	for _, dr := range cfg.Drives {
		fs, size, err := driveFiles(dr)
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
		}
		files = append(files, fs...)
		if !dr.ReadOnly && size > maxFile {
			maxFile = size
		}
	}
	// The memory file and the snapshot are dups: the caller keeps its own.
	for _, f := range []*os.File{memoryFile(&cfg), cfg.Incoming} {
		if f == nil {
			continue
		}
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
		}
		files = append(files, os.NewFile(uintptr(fd), f.Name()))
	}

	if err := os.Mkdir(v.jailDir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("vm %s: jail dir: %w", cfg.ID, err)
	}
	cleanups = append(cleanups, func() { os.Remove(v.jailDir) })

	if cfg.Jail.CgroupParent != "" {
		over := cfg.Jail.MemoryOverheadMiB
		if over == 0 {
			over = vmm.DefaultMemoryOverheadMiB
		}
		v.cgroup = &jail.Cgroup{
			Path:        filepath.Join(cfg.Jail.CgroupParent, "vmm"),
			MemoryBytes: int64(cfg.MemoryMiB+over) << 20,
			PidsMax:     128,
		}
		if err := v.cgroup.Create(); err != nil {
			return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
		}
		cleanups = append(cleanups, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			v.cgroup.Remove(ctx)
		})
	}

	var console *os.File
	if cfg.ConsoleLog != "" {
		f, err := os.OpenFile(cfg.ConsoleLog, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("vm %s: console log: %w", cfg.ID, err)
		}
		console = f
	}
	v.console = newTail(console)
	v.stderr = newTail(nil)
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	v.copiers.Add(2)
	go func() { defer v.copiers.Done(); v.console.copyFrom(outR); outR.Close() }()
	go func() { defer v.copiers.Done(); v.stderr.copyFrom(errR); errR.Close() }()
	closePipes := func() { outW.Close(); errW.Close() }
	cleanups = append(cleanups, func() { closePipes(); v.copiers.Wait() })

	// /dev/kvm is root:kvm 0660 on the host and the jail binds it as it
	// is: the VMM gets the owning group, and nothing else, for it.
	var groups []int
	if accelOf(&cfg) == vmm.AccelKVM {
		st, err := os.Stat("/dev/kvm")
		if err != nil {
			return nil, fmt.Errorf("vm %s: accel kvm: %w", cfg.ID, err)
		}
		if gid := int(st.Sys().(*syscall.Stat_t).Gid); gid != 0 {
			groups = []int{gid}
		}
	}
	t0 := time.Now()
	cmd, err := jail.Start(ctx, jail.Spec{
		Groups:     groups,
		Path:       binary,
		Args:       args(&cfg),
		Root:       v.jailDir,
		Binds:      jf.binds(&cfg),
		UID:        cfg.Jail.UID,
		GID:        cfg.Jail.GID,
		Rlimits:    jail.DefaultRlimits(uint64(maxFile)),
		ExtraFiles: files,
		Stdout:     outW,
		Stderr:     errW,
		Cgroup:     v.cgroup,
		Proc:       cfg.Memory != nil,
	})
	if err != nil {
		return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
	}
	closePipes() // QEMU holds the write ends now
	tJail := time.Since(t0)
	v.cmd = cmd
	v.pid = cmd.Process.Pid
	v.maxFile = maxFile
	// Opened before anything reaps QEMU, so it names this process even
	// if the pid is reused later.
	pidfd, pidfdErr := unix.PidfdOpen(v.pid, 0)
	if pidfdErr == nil {
		cleanups = append(cleanups, func() { unix.Close(pidfd) })
	}
	v.exited = make(chan struct{})
	go func() { v.waitErr = cmd.Wait(); close(v.exited) }()
	cleanups = append(cleanups, func() { cmd.Process.Kill(); <-v.exited })

	// A QEMU that failed says why on stderr: let it finish saying so.
	failed := func(what string, err error) error {
		cmd.Process.Kill()
		<-v.exited
		// Exited with a status of its own, not by our SIGKILL.
		var ee *exec.ExitError
		died := errors.As(v.waitErr, &ee) && ee.ExitCode() > 0
		closePipes()
		v.copiers.Wait()
		l := v.stderr.lastLine("")
		if died && l != "" {
			return fmt.Errorf("vm %s: qemu exited while starting: %s", cfg.ID, l)
		}
		if l != "" {
			return fmt.Errorf("vm %s: %s: %w (qemu: %s)", cfg.ID, what, err, l)
		}
		return fmt.Errorf("vm %s: %s: %w", cfg.ID, what, err)
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// A QEMU that dies before it speaks QMP ends the wait at once.
	go func() {
		select {
		case <-v.exited:
			cancel()
		case <-qctx.Done():
		}
	}()
	c, err := qmp.Dial(qctx, v.qmpPath)
	if err != nil {
		return nil, failed("connect to qemu", err)
	}
	v.qmp = c
	tQMP := time.Since(t0)
	cleanups = append(cleanups, func() { c.Close() })
	v.events.Add(1)
	go v.watchEvents()
	if cfg.Incoming != nil {
		// The guest's state first: a snapshot is saved paused, and QEMU
		// keeps a restored guest paused (a cont while it reads the state
		// would be forgotten), and nothing may reach its devices before
		// (a host on the agent's port included).
		if err := incoming(qctx, c, &cfg); err != nil {
			return nil, failed("restore the snapshot", err)
		}
		if err := v.waitIncoming(qctx); err != nil {
			return nil, failed("restore the snapshot", err)
		}
	}
	if _, err := c.Execute(qctx, "cont", nil); err != nil {
		return nil, failed("start the guest", err)
	}
	if pidfdErr == nil && !d.keepBootFiles {
		v.events.Add(1)
		go func() {
			defer v.events.Done()
			defer unix.Close(pidfd)
			bctx, cancel := context.WithTimeout(context.Background(), vmm.DefaultBootTimeout(accelOf(&cfg)))
			defer cancel()
			n, err := releaseBootFiles(bctx, c, pidfd, v.pid, v.exited)
			v.log.Debug("boot files paged out of the vmm", "bytes", n, "err", err)
		}()
	} else if pidfdErr == nil {
		unix.Close(pidfd)
	}
	go v.reap()
	v.log.Debug("vm started", "pid", v.pid, "accel", accelOf(&cfg),
		"exec_ms", tJail.Milliseconds(), "qmp_ready_ms", tQMP.Milliseconds(), "running_ms", time.Since(t0).Milliseconds())
	return v, nil
}

func memoryFile(cfg *vmm.Config) *os.File {
	if cfg.Memory == nil {
		return nil
	}
	return cfg.Memory.File
}

// incoming starts reading cfg.Incoming into the paused VMM. A clone of a
// template whose RAM stayed in the memory file reads only the device
// state (x-ignore-shared), so the template's pages are mapped, not
// copied. A bad snapshot ends QEMU with the reason on stderr.
func incoming(ctx context.Context, c *qmp.Client, cfg *vmm.Config) error {
	if err := setMigrationCaps(ctx, c, cfg.Memory != nil && !cfg.Memory.Shared); err != nil {
		return err
	}
	_, err := c.Execute(ctx, "migrate-incoming", map[string]any{"uri": fmt.Sprintf("fd:%d", incomingFd(cfg))})
	return err
}

func setMigrationCaps(ctx context.Context, c *qmp.Client, ignoreShared bool) error {
	caps := []map[string]any{
		{"capability": "events", "state": true},
		{"capability": "x-ignore-shared", "state": ignoreShared},
	}
	_, err := c.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": caps})
	return err
}

// jailFiles returns binary's jail content, found on first use. An error
// is not kept: a binary installed later is found then.
func (d *Driver) jailFiles(binary string) (*jailFiles, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if jf := d.files[binary]; jf != nil {
		return jf, nil
	}
	jf, err := findJailFiles(binary)
	if err != nil {
		return nil, err
	}
	d.files[binary] = jf
	return jf, nil
}

// driveFiles opens a drive for QEMU's fdset (see args): O_RDONLY, plus
// O_RDWR when writable. Only regular files and block devices are drives.
func driveFiles(dr vmm.Drive) ([]*os.File, int64, error) {
	ro, err := os.Open(dr.Path)
	if err != nil {
		return nil, 0, fmt.Errorf("drive %s: %w", dr.ID, err)
	}
	st, err := ro.Stat()
	if err != nil || !(st.Mode().IsRegular() || st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0) {
		ro.Close()
		return nil, 0, fmt.Errorf("drive %s: %s is not a regular file or block device: %w", dr.ID, dr.Path, errdefs.ErrInvalid)
	}
	if dr.ReadOnly {
		return []*os.File{ro}, st.Size(), nil
	}
	rw, err := os.OpenFile(dr.Path, os.O_RDWR, 0)
	if err != nil {
		ro.Close()
		return nil, 0, fmt.Errorf("drive %s: %w", dr.ID, err)
	}
	return []*os.File{ro, rw}, st.Size(), nil
}

func listenUnix(path string) (*net.UnixListener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// We remove the file ourselves; closing our listener must not.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		os.Remove(path)
		return nil, err
	}
	return l, nil
}
