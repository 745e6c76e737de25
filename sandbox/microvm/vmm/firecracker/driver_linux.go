package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	"github.com/sirupsen/logrus"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// Driver starts Firecracker VMs.
type Driver struct{ opts Options }

var _ vmm.Driver = (*Driver)(nil)

// New checks that the binaries exist. Where KVM does not work (see
// qemu.Probe) the caller must not use this driver at all.
func New(opts Options) (*Driver, error) {
	for _, b := range []string{opts.Binary, opts.JailerBinary} {
		if b == "" {
			continue
		}
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("firecracker binary %s: %w: %w", b, err, errdefs.ErrUnavailable)
		}
	}
	return &Driver{opts: opts}, nil
}

// Start implements vmm.Driver.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.VM, error) {
	c, err := MachineConfig(cfg, d.opts)
	if err != nil {
		return nil, err
	}
	log := logrus.New()
	log.SetOutput(discard{})
	var opts []sdk.Opt
	opts = append(opts, sdk.WithLogger(logrus.NewEntry(log)))
	if c.JailerCfg == nil {
		cmd := sdk.VMCommandBuilder{}.WithBin(d.opts.Binary).WithSocketPath(c.SocketPath).Build(context.Background())
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		opts = append(opts, sdk.WithProcessRunner(cmd))
	}
	// The machine outlives Start's ctx: it is stopped by Stop only.
	m, err := sdk.NewMachine(context.Background(), c, opts...)
	if err != nil {
		return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
	}
	if err := m.Start(ctx); err != nil {
		m.StopVMM()
		return nil, fmt.Errorf("vm %s: start firecracker: %w", cfg.ID, err)
	}
	pid, _ := m.PID()
	v := &vm{m: m, pid: pid, done: make(chan struct{}), socket: c.SocketPath, agent: cfg.AgentSocket}
	go v.wait()
	return v, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

type vm struct {
	m      *sdk.Machine
	pid    int
	socket string
	agent  string

	mu       sync.Mutex
	stopping bool // protected by mu

	done chan struct{}
	exit vmm.ExitInfo
}

func (v *vm) Pid() int { return v.pid }

func (v *vm) wait() {
	err := v.m.Wait(context.Background())
	info := vmm.ExitInfo{Reason: vmm.ExitPoweroff}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		info.Reason = vmm.ExitVMMExited
		info.Code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			info.Signal, info.Code = ws.Signal(), -1
		}
	} else if err != nil {
		info.Reason, info.Detail = vmm.ExitVMMExited, err.Error()
	}
	v.mu.Lock()
	if v.stopping {
		info.Reason = vmm.ExitStopped
	}
	v.mu.Unlock()
	os.Remove(v.socket)
	os.Remove(v.agent)
	v.exit = info
	close(v.done)
}

func (v *vm) Wait() <-chan vmm.ExitInfo {
	ch := make(chan vmm.ExitInfo, 1)
	go func() { <-v.done; ch <- v.exit; close(ch) }()
	return ch
}

func (v *vm) Stop(ctx context.Context) error {
	v.mu.Lock()
	v.stopping = true
	v.mu.Unlock()
	v.m.StopVMM()
	select {
	case <-v.done:
		return nil
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
	if p, err := os.FindProcess(v.pid); err == nil {
		p.Kill()
	}
	<-v.done
	return nil
}
