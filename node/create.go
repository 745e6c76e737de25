package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/network"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/shim"
)

var errNotFound = errdefs.ErrNotFound

// lostShim is what a shim that replaces a lost one takes over from the
// instance's status.
type lostShim struct {
	restarts map[string]int                    // see shim.Config.RestartCounts
	exited   map[string]sandbox.ContainerState // see shim.Config.Exited
	// keepNetwork: a failed create leaves the network attachment, which a
	// suspended instance's saved guest still uses (its IP).
	keepNetwork bool
}

// lostShimOf reads in's status after its shim died (SIGKILL, a crash) and
// its containers with it or soon after: the containers that would run
// again run again, the loss counted as a restart of each, and those that
// had ended for good under their restart policy stay ended.
func lostShimOf(in *v1.Instance) *lostShim {
	l := &lostShim{restarts: map[string]int{}, exited: map[string]sandbox.ContainerState{}}
	for _, cs := range in.Status.Containers {
		if cs.State == v1.ContainerTerminated && !shim.RestartsAgain(string(in.Spec.RestartPolicy), cs.ExitCode, cs.RestartCount, in.Spec.MaxRestarts) {
			st := sandbox.ContainerState{Name: cs.Name, Phase: sandbox.PhaseExited, ExitCode: cs.ExitCode, Signal: cs.Signal, OOMKilled: cs.OOMKilled}
			if cs.StartedAt != nil {
				st.StartedAt = *cs.StartedAt
			}
			if cs.FinishedAt != nil {
				st.FinishedAt = *cs.FinishedAt
			}
			l.exited[cs.Name] = st
			l.restarts[cs.Name] = cs.RestartCount
			continue
		}
		l.restarts[cs.Name] = cs.RestartCount + 1
	}
	return l
}

// create prepares images and network and launches the instance's shim,
// which starts the containers once create has seen the network attached.
// lost, if set, is what the shim takes over from a lost one.
func (w *worker) create(ctx context.Context, in *v1.Instance, lost *lostShim) (*shim.Client, error) {
	start := time.Now()
	// The logs directory exists before the shim does, so a follower that
	// comes early watches it for the first line instead of polling.
	if err := os.MkdirAll(filepath.Join(w.dir, "logs"), 0o700); err != nil {
		return nil, err
	}
	meta, _ := json.Marshal(instanceMeta{Tenant: in.Metadata.Tenant, Name: in.Metadata.Name, UID: in.Metadata.UID})
	if err := os.WriteFile(filepath.Join(w.dir, "meta.json"), meta, 0o600); err != nil {
		return nil, err
	}
	spec := sandbox.Spec{
		ID:           w.uid,
		Hostname:     in.Metadata.Name,
		StateDir:     filepath.Join(w.dir, "sandbox"),
		CgroupParent: "/cube/" + w.uid,
		PidsLimit:    cmp.Or(in.Spec.Pids, v1.DefaultPids),
		CacheDir:     filepath.Join(w.a.cfg.StateDir, "sandbox-cache"),
	}
	// An instance stored before spec.disk existed gets the default too.
	disk, err := v1.ParseMemory(cmp.Or(in.Spec.Disk, v1.DefaultDisk))
	if err != nil {
		return nil, fmt.Errorf("spec.disk: %w: %w", err, errdefs.ErrInvalid)
	}
	spec.DiskBytes = disk
	var ports []network.PortMapping
	backend := backendOf(in)
	var vm sandbox.VMOptions
	if backend == sandbox.BackendMicroVM {
		var ok bool
		if vm, ok = w.a.cfg.Runtimes.VM(); !ok {
			return nil, fmt.Errorf("this node cannot run microvm instances now (%s): %w", w.a.cfg.Runtimes.Status().GuestKernel, errdefs.ErrUnavailable)
		}
	}
	for _, c := range in.Spec.Containers {
		cs, err := w.containerSpec(ctx, c, backend)
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.Name, err)
		}
		spec.Containers = append(spec.Containers, cs)
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				ports = append(ports, network.PortMapping{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: strings.ToLower(p.Protocol)})
			}
		}
	}
	// The network is attached while the shim starts and builds the
	// sandbox against the pinned namespace: the shim starts no container
	// before Start below, which runs only once Attach succeeded.
	t0 := time.Now()
	nctx, ncancel := context.WithTimeout(ctx, 30*time.Second)
	defer ncancel()
	netns, err := w.a.cfg.Network.Pin(nctx, w.uid, in.Metadata.Tenant, ports)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	type attached struct {
		att  network.Attachment
		err  error
		took time.Duration
	}
	attc := make(chan attached, 1)
	go func() {
		att, err := w.a.cfg.Network.Attach(nctx, w.uid)
		attc <- attached{att, err, time.Since(t0)}
	}()
	spec.NetNS = netns
	var extra []*os.File
	warm := ""
	if backend == sandbox.BackendMicroVM && in.Metadata.Labels[v1.LabelVMBoot] != v1.VMBootCold {
		// A clone of the node's template for this VM size, when it has one
		// ready; the shim gets the template's memory as an fd.
		if t, ok := w.a.cfg.Runtimes.Template(spec, vm); ok {
			vm.TemplateDir, vm.TemplateMemFD = t.Dir, shim.FirstExtraFD
			extra = append(extra, t.Mem)
			// Better still: a clone restored and warmed ahead, whose shim
			// becomes this instance's.
			warm = t.Warm
		}
	}
	cfg := shim.Config{
		Sandbox:       spec,
		RestartPolicy: string(in.Spec.RestartPolicy),
		MaxRestarts:   in.Spec.MaxRestarts,
		LogDir:        filepath.Join(w.dir, "logs"),
		Socket:        shimSocket(w.dir),
		AwaitStart:    true,
		Backend:       backend,
		VM:            vm,
		ExtraFiles:    extra,
		// The shim logs at debug (its step timings) when the node does.
		Debug: w.a.log.Enabled(ctx, slog.LevelDebug),
	}
	if lost != nil {
		cfg.RestartCounts, cfg.Exited = lost.restarts, lost.exited
	}
	lctx, lcancel := context.WithTimeout(ctx, 30*time.Second)
	defer lcancel()
	c, err := w.launch(lctx, warm, cfg)
	launched := time.Since(t0)
	nw := <-attc
	if err == nil && nw.err == nil {
		if err = w.attached(nw.att); err == nil {
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			err = c.Start(sctx, sandboxInterface(nw.att))
			scancel()
			if err != nil {
				err = fmt.Errorf("start shim: %w", err)
			}
		}
	} else if nw.err != nil {
		err = fmt.Errorf("network: %w", nw.err)
	} else {
		c, err = nil, fmt.Errorf("launch shim: %w", err)
	}
	if err != nil {
		if lost != nil && lost.keepNetwork {
			// A suspended instance's relaunch: its shim holds the only
			// copy of the VM (a shutdown would destroy the saved state),
			// so it stays; the next reconcile adopts it or tries again.
			// (Failing here is also what an agent that stops mid-relaunch
			// sees.)
			return nil, err
		}
		w.undoCreate(ctx, c)
		return nil, err
	}
	w.a.log.Debug("instance prepared", "uid", w.uid, "images", t0.Sub(start), "network", nw.took, "shim", launched, "total", time.Since(start))
	return c, nil
}

// launch starts the instance's shim: the warm shim at warm, if any,
// adopts the instance; if it cannot, a shim is launched for it.
func (w *worker) launch(ctx context.Context, warm string, cfg shim.Config) (*shim.Client, error) {
	if warm != "" {
		c, err := shim.Adopt(ctx, warm, cfg)
		if err == nil {
			return c, nil
		}
		w.a.log.Warn("the warm vm could not be adopted; launching a shim", "uid", w.uid, "err", err)
		// It may have taken the instance's socket before it failed.
		if c := shim.Dial(cfg.Socket); c.Ping(ctx) == nil {
			return c, nil
		}
	}
	return shim.Launch(ctx, w.a.cfg.ShimCommand, cfg)
}

// attached records the instance's network attachment: on disk for a later
// agent (see readIP), and as the IP to report.
func (w *worker) attached(att network.Attachment) error {
	attJSON, _ := json.Marshal(att)
	if err := os.WriteFile(filepath.Join(w.dir, "attachment.json"), attJSON, 0o600); err != nil {
		return err
	}
	w.mu.Lock()
	w.ip = att.IP
	w.mu.Unlock()
	return nil
}

// resume finishes a create that a previous agent left between launching
// the shim and starting it: attach the network (a no-op when attached)
// and let the shim start its containers (a no-op when it did).
func (w *worker) resume(ctx context.Context, c *shim.Client) error {
	nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	att, err := w.a.cfg.Network.Attach(nctx, w.uid)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := w.attached(att); err != nil {
		return err
	}
	return c.Start(nctx, sandboxInterface(att))
}

// undoCreate removes what a failed create made, as a failed network setup
// always did: the shim (c, if it was launched: its containers never
// started) and the network attachment. (A suspended instance's relaunch
// never comes here: see create.)
func (w *worker) undoCreate(ctx context.Context, c *shim.Client) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	if c != nil {
		if err := c.Shutdown(ctx); err != nil {
			w.a.log.Warn("shut down the shim of a failed create", "uid", w.uid, "err", err)
			return // its sandbox may still use the namespace
		}
	}
	if err := w.a.cfg.Network.Teardown(ctx, w.uid); err != nil {
		w.a.log.Warn("tear down the network of a failed create", "uid", w.uid, "err", err)
	}
}

// containerSpec resolves a container against its image: rootfs, argv
// (Docker's rule: command replaces the entrypoint, args replace the cmd),
// environment and user.
func (w *worker) containerSpec(ctx context.Context, c v1.Container, backend string) (sandbox.ContainerSpec, error) {
	img, err := w.a.cfg.Images.Get(ctx, c.ImageDigest)
	if err != nil {
		return sandbox.ContainerSpec{}, fmt.Errorf("image %s (%s): %w", c.Image, c.ImageDigest, err)
	}
	rootfs, err := w.a.cfg.Images.RootFS(ctx, c.ImageDigest)
	if err != nil {
		return sandbox.ContainerSpec{}, fmt.Errorf("unpack image %s: %w", c.Image, err)
	}
	argv := ResolveArgs(img.Config, c.Command, c.Args)
	if len(argv) == 0 {
		return sandbox.ContainerSpec{}, fmt.Errorf("no command: image %s has no entrypoint or cmd; give one after the image name", c.Image)
	}
	// The image's environment with the spec's over it, and Docker's
	// default PATH where neither has one.
	over := make([]string, 0, len(c.Env))
	for _, e := range c.Env {
		over = append(over, e.Name+"="+e.Value)
	}
	env := sandbox.MergeEnv(img.Config.Env, over)
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	cwd := c.WorkingDir
	if cwd == "" {
		cwd = img.Config.WorkingDir
	}
	user, err := resolveUser(rootfs, img.Config.User)
	if err != nil {
		return sandbox.ContainerSpec{}, err
	}
	cpu, _ := v1.ParseCPU(c.Resources.CPU)
	mem, _ := v1.ParseMemory(c.Resources.Memory)
	root := sandbox.RootFS{Dir: rootfs}
	if backend == sandbox.BackendMicroVM {
		// A VM gets the image as a read-only drive, built once per image
		// and shared by every VM of the node; the host still reads the
		// unpacked image (its /etc/passwd).
		if root.Image, root.FSType, err = w.a.cfg.Images.BlockImage(ctx, c.ImageDigest); err != nil {
			return sandbox.ContainerSpec{}, fmt.Errorf("block image of %s: %w", c.Image, err)
		}
	}
	return sandbox.ContainerSpec{Name: c.Name, RootFS: root, Args: argv, Env: env, WorkingDir: cwd, User: user, MilliCPU: cpu, MemoryBytes: mem}, nil
}

// ResolveArgs applies Docker's rule: a command replaces the image's
// entrypoint and drops its cmd; args replace the cmd.
func ResolveArgs(cfg image.Config, command, args []string) []string {
	entry, cmd := cfg.Entrypoint, cfg.Cmd
	if len(command) > 0 {
		entry, cmd = command, nil
	}
	if len(args) > 0 {
		cmd = args
	}
	return append(append([]string{}, entry...), cmd...)
}

// resolveUser turns an image's USER ("nobody", "1000:1000") into numbers,
// reading the image's own /etc/passwd, never the host's.
func resolveUser(rootfs, user string) (string, error) {
	if user == "" {
		return "", nil
	}
	name, group, _ := strings.Cut(user, ":")
	if _, err := strconv.Atoi(name); err == nil && (group == "" || isNum(group)) {
		return user, nil
	}
	// The image is hostile: read its passwd through ReadImageFile, which
	// never leaves the rootfs, never blocks on a FIFO and caps the size.
	b, err := sandbox.ReadImageFile(rootfs, "/etc/passwd")
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("image user %q: no /etc/passwd in the image to resolve it; use a numeric uid", user)
	}
	if err != nil {
		return "", fmt.Errorf("image user %q: %w", user, err)
	}
	for line := range strings.Lines(string(b)) {
		fields := strings.Split(strings.TrimRight(line, "\n"), ":")
		if len(fields) >= 4 && (fields[0] == name || fields[2] == name) {
			if group == "" {
				return fields[2] + ":" + fields[3], nil
			}
			if isNum(group) {
				return fields[2] + ":" + group, nil
			}
			return "", fmt.Errorf("image user %q: named groups are not supported; use a numeric gid", user)
		}
	}
	return "", fmt.Errorf("image user %q not found in the image's /etc/passwd", user)
}

func isNum(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

// shimSocket is where the shim of the instance in dir listens.
func shimSocket(dir string) string { return filepath.Join(dir, "shim.sock") }

// liveShim returns a client for the shim of the instance in dir if one
// answers (it may have outlived a previous agent), else nil.
func liveShim(ctx context.Context, dir string) *shim.Client {
	c := shim.Dial(shimSocket(dir))
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if c.Ping(pctx) != nil {
		return nil
	}
	return c
}

// teardown removes every trace of an instance on this host: the shim and
// its sandbox (processes, mounts, cgroups; what a dead shim left too), the
// network attachment, and the instance's directory with its logs. It is
// idempotent.
func (a *Agent) teardown(ctx context.Context, uid string) error {
	dir := filepath.Join(a.instancesDir(), uid)
	if c := liveShim(ctx, dir); c != nil {
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := c.Shutdown(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("shut down shim: %w", err)
		}
	} else if err := a.destroyLeftoverSandbox(ctx, dir); err != nil {
		return err
	}
	nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.cfg.Network.Teardown(nctx, uid); err != nil {
		return fmt.Errorf("network teardown: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// statusFromShim maps the shim's report onto the instance status, keeping
// the timestamps of earlier phases.
func statusFromShim(prev v1.InstanceStatus, st shim.State, ip string, now time.Time) v1.InstanceStatus {
	out := prev
	out.IP = ip
	out.Phase = v1.Phase(st.Phase)
	out.Reason, out.Message = st.Reason, st.Message
	if out.Phase == v1.PhaseRunning && out.RunningAt == nil {
		out.RunningAt = &now
	}
	if out.Phase.Terminal() && out.FinishedAt == nil {
		out.FinishedAt = &now
	}
	suspensionTimes(&out, prev, st, now)
	out.Containers = nil
	for _, c := range st.Containers {
		cs := v1.ContainerStatus{Name: c.Name, ExitCode: c.ExitCode, Signal: c.Signal, OOMKilled: c.OOMKilled, RestartCount: c.RestartCount, Reason: c.Reason}
		switch c.Phase {
		case sandbox.PhaseRunning:
			cs.State = v1.ContainerRunning
		case sandbox.PhaseExited:
			cs.State = v1.ContainerTerminated
		default:
			cs.State = v1.ContainerWaiting
		}
		if !c.StartedAt.IsZero() {
			t := c.StartedAt.UTC()
			cs.StartedAt = &t
		}
		if !c.FinishedAt.IsZero() && cs.State == v1.ContainerTerminated {
			t := c.FinishedAt.UTC()
			cs.FinishedAt = &t
		}
		if l := c.LastExit; l != nil {
			cs.LastExit = &v1.ContainerExit{ExitCode: l.ExitCode, Signal: l.Signal, OOMKilled: l.OOMKilled, Reason: l.Reason, FinishedAt: l.FinishedAt.UTC()}
		}
		out.Containers = append(out.Containers, cs)
	}
	return out
}

// sandboxInterface is the interface of att as a sandbox connects to it.
// CNI returns no resolver here, so the node's own resolv.conf stands in
// (as the runc backend copies it into every container).
func sandboxInterface(att network.Attachment) *sandbox.Interface {
	iface := &sandbox.Interface{
		Name: att.Interface, MAC: att.MAC, Gateway: att.Gateway,
		Address: fmt.Sprintf("%s/%d", att.IP, att.PrefixLen),
		DNS:     sandbox.DNS{Nameservers: att.DNS.Nameservers, Search: att.DNS.Search, Options: att.DNS.Options},
	}
	for _, r := range att.Routes {
		iface.Routes = append(iface.Routes, sandbox.Route{Dst: r.Dst, Via: r.GW})
	}
	if len(iface.DNS.Nameservers) == 0 {
		iface.DNS = hostDNS("/etc/resolv.conf")
	}
	return iface
}

// hostDNS reads the resolver settings of a resolv.conf ("": none).
func hostDNS(path string) sandbox.DNS {
	var dns sandbox.DNS
	b, err := os.ReadFile(path)
	if err != nil {
		return dns
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, f[1])
		case "search":
			dns.Search = f[1:]
		case "options":
			dns.Options = f[1:]
		}
	}
	return dns
}

// InstancePaths are where a node keeps one instance's files.
type InstancePaths struct {
	Dir     string // the instance's directory
	Sandbox string // its sandbox's state dir
	ShimPid string // its shim's pid file
	ShimLog string // its shim's own log
}

// PathsOf returns the paths of instance uid on a node whose state dir is
// stateDir (`cube up`: DATA_DIR/node).
func PathsOf(stateDir, uid string) InstancePaths {
	dir := filepath.Join(stateDir, "instances", uid)
	f := shim.FilesFor(shimSocket(dir))
	return InstancePaths{Dir: dir, Sandbox: filepath.Join(dir, "sandbox"), ShimPid: f.Pid, ShimLog: f.Log}
}
