package runc

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/cpuweight"
)

var _ sandbox.Sandbox = (*runcSandbox)(nil)

// validName is what a sandbox ID or container name may look like: they end
// up in file names, runc IDs and cgroup paths.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// runcSandbox is one instance: shared namespaces plus runc containers.
type runcSandbox struct {
	spec   sandbox.Spec
	runc   *cli
	log    *slog.Logger
	resolv string // host resolv.conf to copy
	files  sharedFiles
	pins   nsPins   // namespace files this sandbox created
	disk   disk     // the writable layer of every container
	pids   int64    // the sandbox's pids limit
	order  []string // container names in spec order
	byName map[string]*container

	// lifeMu serializes Create and Destroy.
	lifeMu sync.Mutex

	mu        sync.Mutex
	created   bool // protected by mu
	destroyed bool // protected by mu
}

// New returns the runc sandbox for spec. It does nothing on the host until
// Create. The calling process must be a child subreaper
// (prctl(PR_SET_CHILD_SUBREAPER, 1), done in the shim's main): container
// processes are reparented to it when runc exits, and only their parent can
// read their exit status.
func New(spec sandbox.Spec, opts Options) (sandbox.Sandbox, error) {
	if err := validate(spec); err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalid, err)
	}
	if !isSubreaper() {
		return nil, errors.New("sandbox/runc: this process is not a child subreaper; call prctl(PR_SET_CHILD_SUBREAPER, 1) first (the shim does) so container exit codes can be reaped")
	}
	bin := opts.Runtime
	if bin == "" {
		bin = "runc"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("sandbox/runc: runc binary %q not found: %w (install runc, e.g. apt-get install runc)", bin, err)
	}
	root := opts.Root
	if root == "" {
		root = filepath.Join(spec.StateDir, "runc")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	resolv := opts.ResolvConf
	if resolv == "" {
		resolv = "/etc/resolv.conf"
	}
	s := &runcSandbox{
		spec:   spec,
		runc:   &cli{bin: path, root: root, logDir: filepath.Join(spec.StateDir, "logs")},
		log:    logger.With("component", "sandbox/runc", "sandbox", spec.ID),
		resolv: resolv,
		byName: make(map[string]*container),
		pins: nsPins{
			ipc: filepath.Join(spec.StateDir, "ns", "ipc"),
			uts: filepath.Join(spec.StateDir, "ns", "uts"),
		},
	}
	s.disk = disk{
		file:  cmp.Or(spec.WritableLayer, filepath.Join(spec.StateDir, "disk.img")),
		mount: filepath.Join(spec.StateDir, "disk"),
		size:  cmp.Or(spec.DiskBytes, DefaultDiskBytes),
		cache: spec.CacheDir,
	}
	s.pids = cmp.Or(spec.PidsLimit, DefaultPidsLimit)
	if spec.NetNS == "" {
		s.pins.net = filepath.Join(spec.StateDir, "ns", "net")
	}
	netNS := spec.NetNS
	if netNS == "" {
		netNS = s.pins.net
	}
	// The /etc files are bind-mounted writable into every container: they
	// live on the sandbox's disk, so that writing to them is bounded too.
	etc := filepath.Join(s.disk.mount, "etc")
	s.files = sharedFiles{
		ipcNS: s.pins.ipc, utsNS: s.pins.uts, netNS: netNS,
		hosts:      filepath.Join(etc, "hosts"),
		hostname:   filepath.Join(etc, "hostname"),
		resolvConf: filepath.Join(etc, "resolv.conf"),
		shm:        filepath.Join(spec.StateDir, "shm"),
	}
	for _, c := range spec.Containers {
		dir := filepath.Join(spec.StateDir, "containers", c.Name)
		s.order = append(s.order, c.Name)
		s.byName[c.Name] = &container{
			spec:   c,
			id:     spec.ID + "-" + c.Name,
			dir:    dir,
			cgroup: cgroupsPath(spec, c.Name),
			state:  sandbox.ContainerState{Name: c.Name, Phase: sandbox.PhaseCreated},
		}
	}
	return s, nil
}

// Factory is New as a sandbox.Factory, for the shim's backends.
func Factory(spec sandbox.Spec, opts sandbox.Options) (sandbox.Sandbox, error) {
	return New(spec, Options{Runtime: opts.Runc, Logger: opts.Logger})
}

// Connect implements sandbox.Sandbox: the containers join Spec.NetNS, where
// the interface already is, so there is nothing to do.
func (s *runcSandbox) Connect(ctx context.Context, iface sandbox.Interface) error {
	return nil
}

func validate(spec sandbox.Spec) error {
	if !validName.MatchString(spec.ID) {
		return fmt.Errorf("sandbox/runc: sandbox id %q: want 1-63 letters, digits, '-', '_' or '.'", spec.ID)
	}
	if !filepath.IsAbs(spec.StateDir) {
		return fmt.Errorf("sandbox/runc: sandbox %s: state dir %q must be an absolute path", spec.ID, spec.StateDir)
	}
	if !strings.HasPrefix(spec.CgroupParent, "/") || spec.CgroupParent == "/" || filepath.Clean(spec.CgroupParent) != spec.CgroupParent {
		return fmt.Errorf("sandbox/runc: sandbox %s: cgroup parent %q must be a clean absolute cgroup path below the root, e.g. /cube/%s", spec.ID, spec.CgroupParent, spec.ID)
	}
	if len(spec.Containers) == 0 {
		return fmt.Errorf("sandbox/runc: sandbox %s has no containers", spec.ID)
	}
	if spec.CacheDir != "" && !filepath.IsAbs(spec.CacheDir) {
		return fmt.Errorf("sandbox/runc: sandbox %s: cache dir %q must be an absolute path", spec.ID, spec.CacheDir)
	}
	if spec.PidsLimit < 0 {
		return fmt.Errorf("sandbox/runc: sandbox %s: pids limit %d is negative", spec.ID, spec.PidsLimit)
	}
	if spec.DiskBytes != 0 && spec.DiskBytes < MinDiskBytes {
		return fmt.Errorf("sandbox/runc: sandbox %s: disk of %d bytes is below the minimum of %d", spec.ID, spec.DiskBytes, MinDiskBytes)
	}
	seen := map[string]bool{}
	for _, c := range spec.Containers {
		if !validName.MatchString(c.Name) {
			return fmt.Errorf("sandbox/runc: container name %q: want 1-63 letters, digits, '-', '_' or '.'", c.Name)
		}
		if seen[c.Name] {
			return fmt.Errorf("sandbox/runc: container name %q used twice", c.Name)
		}
		seen[c.Name] = true
		if len(c.Args) == 0 {
			return fmt.Errorf("sandbox/runc: container %s: no command (args are empty)", c.Name)
		}
		if c.RootFS.Image != "" {
			return fmt.Errorf("sandbox/runc: container %s: rootfs is a block image (%s); this backend runs unpacked directories only", c.Name, c.RootFS.Image)
		}
		if !filepath.IsAbs(c.RootFS.Dir) {
			return fmt.Errorf("sandbox/runc: container %s: rootfs %q must be an absolute path", c.Name, c.RootFS.Dir)
		}
	}
	return nil
}

func (s *runcSandbox) container(name string) (*container, error) {
	c, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("sandbox %s: no container named %q: %w", s.spec.ID, name, errdefs.ErrNotFound)
	}
	return c, nil
}

// Create pins the shared namespaces, removes containers a dead shim left
// behind (see removeLeftovers), writes the shared /etc files, mounts
// the shared /dev/shm and every container's overlay, writes each
// container's bundle, and has runc create each container up to the exec
// of its command (see precreate). A failed Create removes what it made.
func (s *runcSandbox) Create(ctx context.Context) (err error) {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.mu.Lock()
	created, destroyed := s.created, s.destroyed
	s.mu.Unlock()
	if destroyed {
		return fmt.Errorf("sandbox %s: already destroyed; build a new one: %w", s.spec.ID, errdefs.ErrConflict)
	}
	if created {
		return nil
	}
	defer func() {
		if err != nil {
			if cerr := s.cleanup(context.WithoutCancel(ctx)); cerr != nil {
				s.log.Error("roll back failed create", "err", cerr)
			}
			err = fmt.Errorf("sandbox %s: create: %w", s.spec.ID, err)
		}
	}()
	for _, dir := range []string{s.runc.root, s.runc.logDir, filepath.Dir(s.pins.ipc), s.files.shm} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	if s.spec.NetNS != "" {
		if _, err := os.Stat(s.spec.NetNS); err != nil {
			return fmt.Errorf("network namespace from the node: %w", err)
		}
	}
	if pinned, err := isMountPoint(s.pins.ipc); err != nil {
		return err
	} else if !pinned {
		if err := pinNamespaces(s.spec.Hostname, s.pins); err != nil {
			return err
		}
	}
	if err := s.removeLeftovers(ctx); err != nil {
		return err
	}
	// Each container's shares divide the instance's weight among them;
	// the weight itself, against the node's other instances, is the
	// parent's.
	if err := cpuweight.Set(s.spec.CgroupParent, s.spec.MilliCPU()); err != nil {
		return err
	}
	// Before any container exists: runc's per-container cgroups are made
	// below this one, so the limit holds from their first process on.
	if err := setPidsLimit(s.spec.CgroupParent, s.pids); err != nil {
		return err
	}
	if limit := memoryBound(s.spec); limit > 0 {
		if err := setMemoryLimit(s.spec.CgroupParent, limit, swapAccounted()); err != nil {
			return err
		}
	}
	if err := s.disk.ensure(ctx); err != nil {
		return err
	}
	if err := s.writeEtc(); err != nil {
		return err
	}
	if mounted, err := isMountPoint(s.files.shm); err != nil {
		return err
	} else if !mounted {
		if err := unix.Mount("shm", s.files.shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("mode=1777,size=%dk", shmSize>>10)); err != nil {
			return fmt.Errorf("mount shared /dev/shm: %w", err)
		}
	}
	memsw := swapAccounted()
	for _, name := range s.order {
		if err := s.prepare(s.byName[name], memsw); err != nil {
			return fmt.Errorf("container %s: %w", name, err)
		}
	}
	s.precreateAll(ctx)
	s.mu.Lock()
	s.created = true
	s.mu.Unlock()
	s.log.Info("sandbox created", "state_dir", s.spec.StateDir)
	return nil
}

// writeEtc writes the /etc/hosts, /etc/hostname and /etc/resolv.conf that
// every container of the sandbox bind-mounts.
func (s *runcSandbox) writeEtc() error {
	name := s.spec.Hostname
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if name != "" {
		// The instance's IP is the node's business; the name must at least
		// resolve, so map it like Debian does.
		hosts += "127.0.1.1\t" + name + "\n"
	}
	resolv, err := hostResolvConf(s.resolv)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.files.hosts), 0o755); err != nil {
		return err
	}
	for path, data := range map[string]string{s.files.hosts: hosts, s.files.hostname: name + "\n", s.files.resolvConf: resolv} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// hostResolvConf copies the host's resolv.conf minus loopback name servers,
// which mean nothing inside the sandbox's own network namespace.
func hostResolvConf(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		return "", fmt.Errorf("read host resolv.conf: %w", err)
	}
	var out strings.Builder
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" && (strings.HasPrefix(f[1], "127.") || f[1] == "::1") {
			continue
		}
		out.WriteString(line)
	}
	return out.String(), nil
}

// prepare mounts one container's overlay and writes its bundle.
func (s *runcSandbox) prepare(c *container, memsw bool) error {
	if fi, err := os.Stat(c.spec.RootFS.Dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("image rootfs %s is not a directory (was the image mounted?): %v", c.spec.RootFS.Dir, err)
	}
	// The upper and work directories are on the sandbox's disk: its size
	// bounds what the container writes.
	layer := filepath.Join(s.disk.mount, "containers", c.spec.Name)
	upper, work, merged := filepath.Join(layer, "upper"), filepath.Join(layer, "work"), filepath.Join(c.dir, "rootfs")
	for _, d := range []string{upper, work, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := mountOverlay(c.spec.RootFS.Dir, upper, work, merged); err != nil {
		return err
	}
	spec, err := ociSpec(s.spec, c.spec, s.files, memsw)
	if err != nil {
		return err
	}
	c.process = spec.Process
	b, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.dir, "config.json"), b, 0o600)
}

// baseProcess is the container's process spec, for exec.
func (c *container) baseProcess() *specs.Process { return c.process }

// Destroy kills every container and removes every trace of the sandbox:
// runc state, overlays, the shared /dev/shm, the pinned namespaces (the
// network one only if the sandbox made it), the cgroups and StateDir. It
// may be called again after a partial failure.
func (s *runcSandbox) Destroy(ctx context.Context) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.mu.Lock()
	s.destroyed = true
	s.created = false
	s.mu.Unlock()
	if err := s.cleanup(ctx); err != nil {
		return fmt.Errorf("sandbox %s: destroy: %w", s.spec.ID, err)
	}
	s.log.Info("sandbox destroyed")
	return nil
}

// cleanup undoes Create, skipping whatever is already gone.
// shmSize is the size of the tmpfs every container of a sandbox shares
// as /dev/shm.
const shmSize = 64 << 20

// memoryBound is the memory the whole sandbox may hold: the sum of its
// containers' limits plus its /dev/shm, whose files outlive a container's
// run by design. 0 (no bound) when a container has no limit.
func memoryBound(spec sandbox.Spec) int64 {
	var sum int64 = shmSize
	for _, c := range spec.Containers {
		if c.MemoryBytes <= 0 {
			return 0
		}
		sum += c.MemoryBytes
	}
	return sum
}

func (s *runcSandbox) cleanup(ctx context.Context) error {
	var errs []error
	cgroups := make([]string, 0, len(s.order)+1)
	for _, name := range s.order {
		c := s.byName[name]
		if err := s.kill(ctx, c); err != nil {
			errs = append(errs, err)
		}
		if err := s.runc.run(ctx, runcStdio{}, "delete", "--force", c.id); err != nil && !notExist(err) {
			errs = append(errs, err)
		}
		if err := unmountAll(filepath.Join(c.dir, "rootfs")); err != nil {
			errs = append(errs, err)
		}
		cgroups = append(cgroups, c.cgroup)
	}
	// After the overlays on it: the unmount releases the loop device.
	if err := unmountAll(s.disk.mount); err != nil {
		errs = append(errs, err)
	}
	cgroups = append(cgroups, filepath.Clean(s.spec.CgroupParent))
	if err := removeCgroups(cgroups...); err != nil {
		errs = append(errs, err)
	}
	if err := unmountAll(s.files.shm); err != nil {
		errs = append(errs, err)
	}
	for _, p := range []string{s.pins.ipc, s.pins.uts, s.pins.net} {
		if err := unpinNamespace(p); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Never RemoveAll across a mount point: it would reach into the image
	// or a namespace file.
	left, err := mountsUnder(s.spec.StateDir)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("mounts still present under %s: %v; unmount them and retry", s.spec.StateDir, left)
	}
	if err := os.Remove(s.disk.file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove writable layer: %w", err)
	}
	if err := os.RemoveAll(s.spec.StateDir); err != nil {
		return fmt.Errorf("remove state dir: %w", err)
	}
	return nil
}

func notExist(err error) bool {
	msg := runcMessage(err)
	return strings.Contains(msg, "does not exist") || strings.Contains(msg, "not exist") ||
		strings.Contains(msg, "no such file or directory")
}
