package agent

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
)

// service is the ttRPC face of the agent: each method validates its
// request (bounds first), then checks it against Setup.
type service struct{ a *Agent }

var _ agentapi.AgentService = (*service)(nil)

func (s *service) Hello(ctx context.Context, _ *agentapi.HelloRequest) (*agentapi.HelloResponse, error) {
	s.a.mu.Lock()
	done, bootID := s.a.setup != nil, s.a.bootID
	s.a.mu.Unlock()
	return &agentapi.HelloResponse{AgentVersion: Version, KernelRelease: s.a.release, BootId: bootID, SetupDone: done,
		TimeUnixNano: time.Now().UnixNano()}, nil
}

func (s *service) Setup(ctx context.Context, req *agentapi.SetupRequest) (*agentapi.Empty, error) {
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.shutdown {
		return nil, fmt.Errorf("%w: the agent is shutting down", errdefs.ErrUnavailable)
	}
	if a.setup != nil {
		return nil, fmt.Errorf("%w: setup runs once per boot; reboot the VM to change it", errdefs.ErrForbidden)
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	// One attempt per boot, even a failed one: a VM half set up is
	// rebooted, not patched.
	a.setup = req
	if err := a.doSetup(req); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	for _, c := range req.GetContainers() {
		if _, err := a.rootfsLocked(c); err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
		a.containers[c.GetName()] = &container{spec: c}
	}
	return &agentapi.Empty{}, nil
}

// doSetup applies a valid Setup. Its first steps take this VM's own
// identity, before anything else draws a random number or reads a drive:
// the VM may be a clone of a template, whose kernel RNG state, clock and
// drive probes every clone shares.
// Preconditions: a.mu is held.
func (a *Agent) doSetup(req *agentapi.SetupRequest) error {
	// Each step's time, for the debug log: under TCG a clone runs every
	// step's guest code for the first time.
	steps := newStepTimes()
	step := steps.step
	defer func() { a.log.Debug("setup", steps.kv...) }()
	if a.booted == nil {
		var uts unix.Utsname
		unix.Uname(&uts)
		a.booted = &bootedState{hostname: unix.ByteSliceToString(uts.Nodename[:])}
	}
	if err := a.reseed(req.GetEntropy()); err != nil {
		return err
	}
	a.bootID = readBootID()
	step("reseed")
	if err := a.setClock(req.GetTimeUnixNano()); err != nil {
		return err
	}
	if req.GetRestored() {
		if err := a.reprobeDrives(); err != nil {
			return err
		}
		step("reprobe")
	}
	pids := req.GetPidsLimit()
	if pids == 0 {
		pids = a.cfg.DefaultPidsLimit
	}
	cg, err := newCgroups(a.cfg.CgroupRoot, a.cfg.CgroupParent)
	if err != nil {
		return err
	}
	if err := cg.init(pids); err != nil {
		return err
	}
	a.cgroups = cg
	step("cgroups")
	if err := a.configureNetwork(req.GetNetwork()); err != nil {
		return err
	}
	step("network")
	if err := a.writeEtc(req); err != nil {
		return err
	}
	if a.cfg.Init && req.GetHostname() != "" {
		if err := unix.Sethostname([]byte(req.GetHostname())); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	step("etc")
	err = a.mountDrives(req.GetDrives())
	step("drives")
	return err
}

// stepTimes collects how long each step of a call took, as the key-value
// pairs of one debug log line.
type stepTimes struct {
	kv   []any
	last time.Time
}

func newStepTimes(kv ...any) *stepTimes { return &stepTimes{kv: kv, last: time.Now()} }

// step records the time since the previous step as name's.
func (s *stepTimes) step(name string) {
	now := time.Now()
	s.kv, s.last = append(s.kv, name, now.Sub(s.last).String()), now
}

// setClock sets the guest's wall clock to the host's (Unix ns): the
// kernel set it from the RTC at boot, to the whole second, so a guest
// was up to a second behind the host. Only as PID 1 of a VM: a test
// agent on the host must not set the host's clock.
func (a *Agent) setClock(ns int64) error {
	if ns <= 0 || !a.cfg.Init {
		return nil
	}
	ts := unix.NsecToTimespec(ns)
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("set the clock: %w", err)
	}
	return nil
}

// reseed mixes the host's entropy into the kernel's RNG and reseeds its
// CRNG at once. Only as PID 1 of a VM: a test agent on the host must not
// touch the host's RNG.
func (a *Agent) reseed(entropy []byte) error {
	if !a.cfg.Init {
		return nil
	}
	reseeded, err := reseedKernelRNG(entropy)
	if err != nil {
		return err
	}
	a.log.Debug("mixed entropy into the kernel rng", "bytes", len(entropy), "crng reseeded", reseeded)
	return nil
}

// readBootID reads the kernel's boot id. The kernel makes it from the
// CRNG on its first read, so it is read only after Setup's reseed: a
// template that read it before its snapshot would hand every clone the
// same id (and Hello before Setup answers ""). The kernel keeps it for
// the boot, so later reads (a container's) see the same.
func readBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// reprobeDrives makes the kernel probe every virtio disk again (see
// reprobe_linux.go). Only as PID 1 of a VM: a test agent on the host must
// not unbind the host's disks.
// Preconditions: a.mu is held.
func (a *Agent) reprobeDrives() error {
	if !a.cfg.Init {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), reprobeTimeout)
	defer cancel()
	t0 := time.Now()
	disks, err := reprobeDisks(ctx, virtioBus, "/dev")
	if err != nil {
		return err
	}
	a.log.Debug("re-probed virtio disks", "disks", len(disks), "took", time.Since(t0), "each", fmt.Sprint(disks))
	return nil
}

func (s *service) Resume(ctx context.Context, req *agentapi.ResumeRequest) (*agentapi.Empty, error) {
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.shutdown {
		return nil, fmt.Errorf("%w: the agent is shutting down", errdefs.ErrUnavailable)
	}
	if a.setup == nil {
		return nil, fmt.Errorf("%w: resume is for a VM that was set up; call Setup first", errdefs.ErrConflict)
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	// The same order as Setup: a VM restored twice from one suspend is
	// two clones, so the RNG diverges before the clock lets anything run
	// on.
	if err := a.reseed(req.GetEntropy()); err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	if err := a.setClock(req.GetTimeUnixNano()); err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	return &agentapi.Empty{}, nil
}

func (s *service) Start(ctx context.Context, req *agentapi.StartRequest) (*agentapi.StartResponse, error) {
	a := s.a
	ref := &agentapi.ProcessRef{Container: req.GetContainer()}
	if err := ref.Validate(); err != nil {
		return nil, err
	}
	c, err := a.lookup(req.GetContainer())
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.run != nil && c.run.alive() {
		return nil, fmt.Errorf("%w: container %q is running", errdefs.ErrConflict, c.spec.GetName())
	}
	spec := c.spec
	// Each step's time, for the debug log, as Setup's.
	steps := newStepTimes("container", spec.GetName())
	step := steps.step
	defer func() { a.log.Debug("start", steps.kv...) }()
	rootfs, err := a.rootfs(spec)
	if err != nil {
		return nil, err
	}
	step("rootfs")
	cg, err := a.cgroups.create(spec.GetName(), spec.GetMemoryBytes())
	if err != nil {
		return nil, err
	}
	step("cgroup")
	main, err := newProcess("", spec.GetTty(), spec.GetStdin(), 0, 0)
	if err != nil {
		return nil, err
	}
	run, exited, err := a.startInit(spec.GetName(), cg, initConfig{
		RootFS:   rootfs,
		Hostname: a.setup.GetHostname(),
		Files:    a.etcFiles(),
	})
	if err != nil {
		main.closeAll()
		return nil, err
	}
	step("init")
	run.main = main
	if old := c.run; old != nil {
		old.abandonOutput()
	}
	c.run = run
	// The init's last reports (its main process's exit) are read before
	// the run is closed: the reaper can see the init gone before the
	// listener has read them.
	listened := make(chan struct{})
	go func() {
		run.listen()
		close(listened)
	}()
	go func() {
		ws := <-exited
		// The init's end of the socket closed with it; should anything
		// else still hold it, stop listening after a bound.
		t := time.NewTimer(5 * time.Second)
		select {
		case <-listened:
		case <-t.C:
			run.conn.Close()
			<-listened
		}
		t.Stop()
		run.reaped(ws)
	}()
	err = run.runProcess(ctx, main, initMsg{
		ID: "", Args: spec.GetArgs(), Env: spec.GetEnv(), Cwd: spec.GetCwd(),
		UID: spec.GetUid(), GID: spec.GetGid(), Groups: spec.GetAdditionalGids(), TTY: spec.GetTty(),
	})
	step("process")
	if err == nil {
		err = cg.limitCPU(spec.GetCpuMillis())
	}
	step("cpu")
	if err != nil {
		run.kill()
		return nil, err
	}
	run.mu.Lock()
	pid := main.pid
	run.mu.Unlock()
	return &agentapi.StartResponse{Pid: int32(pid)}, nil
}

// find resolves a process reference.
func (a *Agent) find(ref *agentapi.ProcessRef) (*containerRun, *process, error) {
	if err := ref.Validate(); err != nil {
		return nil, nil, err
	}
	c, err := a.lookup(ref.GetContainer())
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	run := c.run
	c.mu.Unlock()
	if run == nil {
		return nil, nil, fmt.Errorf("%w: container %q has not been started", errdefs.ErrNotFound, ref.GetContainer())
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	if ref.GetExecId() == "" {
		return run, run.main, nil
	}
	p, ok := run.execs[ref.GetExecId()]
	if !ok {
		return nil, nil, fmt.Errorf("%w: exec %q in container %q", errdefs.ErrNotFound, ref.GetExecId(), ref.GetContainer())
	}
	return run, p, nil
}

func (s *service) Wait(ctx context.Context, req *agentapi.WaitRequest) (*agentapi.WaitResponse, error) {
	_, p, err := s.a.find(req.GetProcess())
	if err != nil {
		return nil, err
	}
	return p.wait(ctx)
}

func (s *service) WaitAny(ctx context.Context, req *agentapi.WaitAnyRequest) (*agentapi.WaitAnyResponse, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	procs := make([]*process, len(req.GetProcesses()))
	for i, ref := range req.GetProcesses() {
		_, p, err := s.a.find(ref)
		if err != nil {
			return nil, err
		}
		procs[i] = p
	}
	answer := func(i int) *agentapi.WaitAnyResponse {
		ref := req.GetProcesses()[i]
		return &agentapi.WaitAnyResponse{Process: &agentapi.ProcessRef{Container: ref.GetContainer(), ExecId: ref.GetExecId()}, Exit: procs[i].exit}
	}
	// The first that has exited, in the request's order.
	for i, p := range procs {
		if !p.running() {
			return answer(i), nil
		}
	}
	cases := make([]reflect.SelectCase, 0, len(procs)+1)
	for _, p := range procs {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(p.done)})
	}
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())})
	i, _, _ := reflect.Select(cases)
	if i == len(procs) {
		return nil, fmt.Errorf("%w: wait: %w", errdefs.ErrTimeout, ctx.Err())
	}
	return answer(i), nil
}

func (s *service) Signal(ctx context.Context, req *agentapi.SignalRequest) (*agentapi.Empty, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	run, p, err := s.a.find(req.GetProcess())
	if err != nil {
		return nil, err
	}
	if !p.running() {
		return nil, fmt.Errorf("%w: the process has exited", errdefs.ErrNotFound)
	}
	if req.GetSignal() == int32(syscall.SIGKILL) && req.GetProcess().GetExecId() == "" {
		// Kill the init: SIGKILL of the container is its end, whatever
		// its processes do (the kernel kills the rest of its namespace).
		if err := run.kill(); err != nil {
			return nil, fmt.Errorf("kill the container: %w", err)
		}
		return &agentapi.Empty{}, nil
	}
	if err := sendMsg(run.conn, initMsg{Op: "signal", ID: p.id, Signal: int(req.GetSignal())}); err != nil {
		return nil, fmt.Errorf("%w: the container has exited: %w", errdefs.ErrNotFound, err)
	}
	return &agentapi.Empty{}, nil
}

func (s *service) Exec(ctx context.Context, req *agentapi.ExecRequest) (*agentapi.Empty, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	ref := req.GetProcess()
	run, _, err := s.a.find(&agentapi.ProcessRef{Container: ref.GetContainer()})
	if err != nil {
		return nil, err
	}
	if !run.alive() {
		return nil, fmt.Errorf("%w: container %q is not running", errdefs.ErrConflict, ref.GetContainer())
	}
	p, err := newProcess(ref.GetExecId(), req.GetTty(), req.GetStdin(), uint16(req.GetRows()), uint16(req.GetCols()))
	if err != nil {
		return nil, err
	}
	run.mu.Lock()
	if _, dup := run.execs[ref.GetExecId()]; dup {
		run.mu.Unlock()
		p.closeAll()
		return nil, fmt.Errorf("%w: exec %q", errdefs.ErrAlreadyExists, ref.GetExecId())
	}
	if !pruneExecs(run.execs) {
		run.mu.Unlock()
		p.closeAll()
		return nil, fmt.Errorf("%w: %d execs are running in container %q; wait for one", errdefs.ErrQuotaExceeded, agentapi.MaxExecs, ref.GetContainer())
	}
	run.execs[ref.GetExecId()] = p
	run.mu.Unlock()
	spec := &initMsg{ID: ref.GetExecId(), Args: req.GetArgs(), Env: req.GetEnv(), Cwd: req.GetCwd(), UID: req.GetUid(), GID: req.GetGid(), TTY: req.GetTty()}
	if err := run.runProcess(ctx, p, *spec); err != nil {
		run.mu.Lock()
		delete(run.execs, ref.GetExecId())
		run.mu.Unlock()
		p.closeAll()
		return nil, err
	}
	return &agentapi.Empty{}, nil
}

// pruneExecs makes room for one more exec by forgetting the oldest that
// has exited; false when all MaxExecs are running.
// Preconditions: the run's mu is held.
func pruneExecs(execs map[string]*process) bool {
	if len(execs) < agentapi.MaxExecs {
		return true
	}
	var oldest *process
	for _, p := range execs {
		if !p.running() && (oldest == nil || p.exit.GetFinishedUnixNano() < oldest.exit.GetFinishedUnixNano()) {
			oldest = p
		}
	}
	if oldest == nil {
		return false
	}
	delete(execs, oldest.id)
	oldest.closeAll()
	return true
}

func (s *service) WriteStdin(ctx context.Context, req *agentapi.WriteStdinRequest) (*agentapi.WriteStdinResponse, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	_, p, err := s.a.find(req.GetProcess())
	if err != nil {
		return nil, err
	}
	if len(req.GetData()) == 0 {
		return nil, fmt.Errorf("%w: empty write", errdefs.ErrInvalid)
	}
	n, err := p.writeStdin(ctx, req.GetData())
	if err != nil {
		return nil, err
	}
	return &agentapi.WriteStdinResponse{Written: uint32(n)}, nil
}

func (s *service) CloseStdin(ctx context.Context, req *agentapi.ProcessRef) (*agentapi.Empty, error) {
	_, p, err := s.a.find(req)
	if err != nil {
		return nil, err
	}
	if err := p.closeStdin(); err != nil {
		return nil, fmt.Errorf("%w: close stdin: %w", errdefs.ErrConflict, err)
	}
	return &agentapi.Empty{}, nil
}

func (s *service) ReadOutput(ctx context.Context, req *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	_, p, err := s.a.find(req.GetProcess())
	if err != nil {
		return nil, err
	}
	o := p.stdout
	if req.GetStream() == agentapi.Stream_STREAM_STDERR {
		o = p.stderr
	}
	data, eof, err := o.read(ctx, req.GetOffset(), int(req.GetMaxBytes()))
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: read output: %w", errdefs.ErrTimeout, ctx.Err())
	}
	if err != nil {
		return nil, err
	}
	return &agentapi.ReadOutputResponse{Data: data, Eof: eof}, nil
}

func (s *service) ResizePty(ctx context.Context, req *agentapi.ResizePtyRequest) (*agentapi.Empty, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	_, p, err := s.a.find(req.GetProcess())
	if err != nil {
		return nil, err
	}
	if p.master == nil {
		return nil, fmt.Errorf("%w: the process has no terminal", errdefs.ErrConflict)
	}
	if err := setWinsize(p.master, uint16(req.GetRows()), uint16(req.GetCols())); err != nil {
		return nil, fmt.Errorf("resize: %w", err)
	}
	return &agentapi.Empty{}, nil
}

func (s *service) State(ctx context.Context, _ *agentapi.Empty) (*agentapi.StateResponse, error) {
	a := s.a
	a.mu.Lock()
	cs := make([]*container, 0, len(a.containers))
	for _, c := range a.setup.GetContainers() {
		cs = append(cs, a.containers[c.GetName()])
	}
	a.mu.Unlock()
	resp := &agentapi.StateResponse{}
	for _, c := range cs {
		if c == nil {
			continue
		}
		c.mu.Lock()
		run := c.run
		c.mu.Unlock()
		name := c.spec.GetName()
		if run == nil {
			resp.Processes = append(resp.Processes, &agentapi.ProcessState{Process: &agentapi.ProcessRef{Container: name}, Status: agentapi.Status_STATUS_CREATED})
			continue
		}
		run.mu.Lock()
		procs := []*process{run.main}
		for _, p := range run.execs {
			procs = append(procs, p)
		}
		for _, p := range procs {
			ps := &agentapi.ProcessState{Process: &agentapi.ProcessRef{Container: name, ExecId: p.id}, Pid: int32(p.pid), Status: agentapi.Status_STATUS_RUNNING}
			if !p.running() {
				ps.Status, ps.Exit = agentapi.Status_STATUS_EXITED, p.exit
			}
			resp.Processes = append(resp.Processes, ps)
		}
		run.mu.Unlock()
	}
	return resp, nil
}

// killTimeout bounds how long Shutdown and Reset wait for killed
// containers.
const killTimeout = 10 * time.Second

// currentRuns are the containers' current (or last) runs.
// Preconditions: a.mu is held.
func (a *Agent) currentRuns() []*containerRun {
	var runs []*containerRun
	for _, c := range a.containers {
		c.mu.Lock()
		if c.run != nil {
			runs = append(runs, c.run)
		}
		c.mu.Unlock()
	}
	return runs
}

// killRuns sends SIGKILL to each run's init and waits, killTimeout in
// all, for their main processes to end. It returns the runs that outlived
// that, and the first error sending the signal (the others still get it).
func killRuns(runs []*containerRun) (left []*containerRun, err error) {
	for _, r := range runs {
		if kerr := r.kill(); kerr != nil && err == nil {
			err = kerr
		}
	}
	deadline := time.NewTimer(killTimeout)
	defer deadline.Stop()
	expired := false
	for _, r := range runs {
		if r.main == nil {
			continue
		}
		if expired {
			select {
			case <-r.main.done:
			default:
				left = append(left, r)
			}
			continue
		}
		select {
		case <-r.main.done:
		case <-deadline.C:
			expired = true
			left = append(left, r)
		}
	}
	return left, err
}

func (s *service) Shutdown(ctx context.Context, _ *agentapi.Empty) (*agentapi.Empty, error) {
	a := s.a
	a.mu.Lock()
	if a.shutdown {
		a.mu.Unlock()
		<-a.done
		return &agentapi.Empty{}, nil
	}
	a.shutdown = true
	runs := a.currentRuns()
	a.mu.Unlock()
	left, _ := killRuns(runs)
	for _, r := range left {
		a.log.Warn("a container outlived SIGKILL", "pid", r.initPid)
	}
	unix.Sync()
	if err := a.unmountAll(); err != nil {
		a.log.Warn("unmount", "err", err)
	}
	unix.Sync()
	close(a.done)
	return &agentapi.Empty{}, nil
}
