package microvm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm/tap"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/jail"
)

var _ sandbox.Suspender = (*vmSandbox)(nil)

// A suspended sandbox is two files in its state dir: the VM's whole state
// (devices and RAM, as QEMU's migration stream) and a record of what the
// host knew (the containers, the network, the drive layout), so a shim
// started after this one died can resume it.
const (
	suspendState  = "suspend.state"
	suspendRecord = "suspend.json"
)

type suspendRecordFile struct {
	Containers []sandbox.ContainerState `json:"containers"`
	Iface      *sandbox.Interface       `json:"iface,omitempty"`
	// Drives is how many drives the VM had (a template's clone has the
	// template's slots): the restored VM must have the same.
	Drives int `json:"drives"`
	// IsolatedNIC: the VM had a card reaching nothing (a clone without a
	// network), which the restored one must have too.
	IsolatedNIC bool `json:"isolatedNIC,omitempty"`
	// AgentStream is the last ttRPC stream id the host used: the resumed
	// guest's agent is still in that session (agentapi.NewClientAfter).
	AgentStream uint32 `json:"agentStream"`
	// Copied is how far each container's stdout and stderr were copied.
	Copied      map[string][2]int64 `json:"copied,omitempty"`
	SuspendedAt time.Time           `json:"suspendedAt"`
	Boot        BootRecord          `json:"boot"`
}

// Suspended implements sandbox.Suspender.
func (s *vmSandbox) Suspended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.suspended
}

// Suspend implements sandbox.Suspender: it pauses the guest, saves all of
// it to the state dir and ends the VMM. The containers stay running as
// far as anyone can tell; only an exec in flight ends (the agent's
// connection goes with the VMM).
func (s *vmSandbox) Suspend(ctx context.Context) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.mu.Lock()
	vm, agent, suspended, created, destroyed, setupDone := s.vm, s.agent, s.suspended, s.created, s.destroyed, s.isSetup
	s.mu.Unlock()
	switch {
	case suspended:
		return nil
	case destroyed || !created:
		return fmt.Errorf("sandbox %s is not created or destroyed: %w", s.spec.ID, errdefs.ErrConflict)
	case vm == nil:
		return fmt.Errorf("sandbox %s: its vm is not running: %w", s.spec.ID, errdefs.ErrConflict)
	case !setupDone:
		return fmt.Errorf("sandbox %s: its vm is still being set up: %w", s.spec.ID, errdefs.ErrConflict)
	}
	t0 := time.Now()
	tmp := filepath.Join(s.spec.StateDir, suspendState+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	// From here the VM's end is ours: watch and the followers keep the
	// containers as they are.
	s.mu.Lock()
	s.suspendedBoot = s.booted
	s.mu.Unlock()
	// No host call may be half-written into the saved guest: the client
	// goes first (its calls in flight fail; the followers wait for the
	// VM's end), and the next host continues after its last stream.
	agent.Close()
	stream := agent.LastStreamID()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		s.mu.Lock()
		s.suspendedBoot = nil
		s.mu.Unlock()
		// Without its host the VM cannot go on: it ends, and its
		// containers with it (ReasonVMMExited).
		vm.Stop(context.WithoutCancel(ctx))
		return fmt.Errorf("suspend sandbox %s: %w", s.spec.ID, err)
	}
	if err := vm.Save(ctx, f, false); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	f.Close()
	// The state, then the VM's end, then (once the followers have said
	// how far they copied) the record that makes the state a suspend:
	// a crash before the record leaves a sandbox that boots afresh.
	if err := os.Rename(tmp, filepath.Join(s.spec.StateDir, suspendState)); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	s.suspended, s.agentStream = true, stream
	booted := s.booted
	s.mu.Unlock()
	if err := vm.Stop(context.WithoutCancel(ctx)); err != nil {
		s.log.Warn("stop the suspended vm", "err", err)
	}
	<-booted
	s.followers.Wait()
	s.mu.Lock()
	rec := suspendRecordFile{Iface: s.iface, Drives: s.liveDrives, IsolatedNIC: s.liveIsolatedNIC, AgentStream: stream,
		SuspendedAt: time.Now().UTC(), Boot: s.record, Copied: map[string][2]int64{}}
	for _, name := range s.order {
		c := s.ctrs[name]
		rec.Containers = append(rec.Containers, c.state)
		rec.Copied[name] = c.copied
	}
	s.mu.Unlock()
	if err := writeJSON(filepath.Join(s.spec.StateDir, suspendRecord), rec); err != nil {
		return fmt.Errorf("suspend sandbox %s: record: %w", s.spec.ID, err)
	}
	st, _ := os.Stat(filepath.Join(s.spec.StateDir, suspendState))
	s.log.Info("suspended", "took", time.Since(t0), "state_bytes", st.Size())
	return nil
}

// loadSuspended reads a suspend record a previous shim left, if any, so
// Create resumes nothing but knows the sandbox is suspended.
// Preconditions: lifeMu held.
func (s *vmSandbox) loadSuspended() (bool, error) {
	var rec suspendRecordFile
	err := readJSON(filepath.Join(s.spec.StateDir, suspendRecord), maxRecordBytes, &rec)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("suspend record: %w", err)
	}
	if _, err := os.Stat(filepath.Join(s.spec.StateDir, suspendState)); err != nil {
		return false, fmt.Errorf("suspended state: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range rec.Containers {
		c, ok := s.ctrs[st.Name]
		if !ok {
			return false, fmt.Errorf("suspend record names container %q, which the spec does not have: %w", st.Name, errdefs.ErrInvalid)
		}
		c.state, c.copied = st, rec.Copied[st.Name]
		if st.Phase == sandbox.PhaseRunning {
			c.exited = make(chan struct{})
		}
	}
	s.iface, s.liveDrives, s.liveIsolatedNIC, s.record, s.suspended = rec.Iface, rec.Drives, rec.IsolatedNIC, rec.Boot, true
	s.agentStream = rec.AgentStream
	return true, nil
}

// Resume implements sandbox.Suspender: it starts a VMM on the saved state,
// hands the guest the host's clock and fresh entropy, and follows the
// running containers again.
func (s *vmSandbox) Resume(ctx context.Context, stdio func(container string) sandbox.Stdio) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.mu.Lock()
	suspended, destroyed := s.suspended, s.destroyed
	s.mu.Unlock()
	if destroyed {
		return fmt.Errorf("sandbox %s is destroyed: %w", s.spec.ID, errdefs.ErrConflict)
	}
	if !suspended {
		return nil
	}
	t0 := time.Now()
	uid, err := jail.AllocateID(s.idDir, s.spec.ID)
	if err != nil {
		return err
	}
	if err := s.removeLeftovers(ctx); err != nil {
		return err
	}
	in, err := os.Open(filepath.Join(s.spec.StateDir, suspendState))
	if err != nil {
		return fmt.Errorf("resume sandbox %s: %w", s.spec.ID, err)
	}
	defer in.Close()
	cfg := s.vmConfig(uid)
	s.mu.Lock()
	slots, isolated, stream := s.liveDrives, s.liveIsolatedNIC, s.agentStream
	iface := s.iface
	s.mu.Unlock()
	if isolated && cfg.Net == nil {
		cfg.Net = &vmm.NIC{Tap: tapName, MAC: randomMAC(), Isolated: true}
	}
	if slots > len(cfg.Drives) {
		// A template's clone: its unused slots as they were.
		cfg.Drives = append(cfg.Drives, placeholderSlots(len(cfg.Drives)-1, s.placeholder())...)
	}
	if slots > 0 {
		cfg.Drives = cfg.Drives[:slots]
	}
	cfg.Incoming = in
	bctx, cancel := context.WithTimeout(ctx, s.bootTimeout())
	defer cancel()
	vm, err := s.driver.StartVM(bctx, cfg)
	if err != nil {
		return fmt.Errorf("resume sandbox %s: %w", s.spec.ID, err)
	}
	tVM := time.Since(t0)
	agent, _, err := connectAgent(bctx, vm, cfg.AgentSocket, s.bootTimeout(), stream)
	if err == nil && s.spec.NetNS != "" && iface != nil {
		_, err = tap.Setup(s.spec.NetNS, cmp.Or(iface.Name, "eth0"), tapName)
	}
	tAgent := time.Since(t0)
	var offset time.Duration
	if err == nil {
		// The reseed, then the host's clock over a round trip.
		_, offset, err = syncClock(bctx, agent, entropy())
	}
	if err != nil {
		if agent != nil {
			agent.Close()
		}
		vm.Stop(context.WithoutCancel(ctx))
		return fmt.Errorf("resume sandbox %s: %w", s.spec.ID, err)
	}
	booted := make(chan struct{})
	s.mu.Lock()
	s.vm, s.agent, s.booted, s.isSetup, s.suspended = vm, agent, booted, true, false
	s.liveDrives, s.liveIsolatedNIC = len(cfg.Drives), isolated
	s.record.VMMPid = vm.Pid()
	s.record.ResumeMs = float64(time.Since(t0).Microseconds()) / 1000
	s.record.ClockOffsetMs = float64(offset.Microseconds()) / 1000
	rec := s.record
	var follow []*ctr
	for _, name := range s.order {
		if c := s.ctrs[name]; c.state.Phase == sandbox.PhaseRunning {
			if c.exited == nil {
				c.exited = make(chan struct{})
			}
			if stdio != nil {
				c.stdio = stdio(name)
			}
			follow = append(follow, c)
		}
	}
	s.mu.Unlock()
	go s.watch(vm, agent, booted)
	for _, c := range follow {
		s.followers.Add(1)
		go s.follow(agent, booted, c, c.procRef(), c.stdio, c.exited)
	}
	os.Remove(filepath.Join(s.spec.StateDir, suspendRecord))
	os.Remove(filepath.Join(s.spec.StateDir, suspendState))
	if err := writeBootRecord(s.spec.StateDir, rec); err != nil {
		s.log.Warn("write the boot record", "err", err)
	}
	s.log.Info("resumed", "took", time.Since(t0), "vmm_ms", tVM.Milliseconds(), "agent_ms", tAgent.Milliseconds(), "pid", vm.Pid())
	return nil
}
