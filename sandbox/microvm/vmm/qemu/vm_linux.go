package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/jail"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/qmp"
)

// panicMarker is what the guest kernel prints (at KERN_EMERG, so even a
// quiet console shows it) when it panics.
const panicMarker = "Kernel panic - not syncing"

// VM is one QEMU process.
type VM struct {
	id      string
	log     *slog.Logger
	pid     int
	cmd     *exec.Cmd
	qmp     *qmp.Client
	qmpPath string
	agent   string
	jailDir string
	cgroup  *jail.Cgroup // protected by mu once the VM runs (MoveCgroup)
	console *tail
	stderr  *tail
	copiers sync.WaitGroup // console and stderr copiers
	events  sync.WaitGroup // the QMP event watcher and the boot-file releaser
	// migration receives each MIGRATION event's status (Save waits on it).
	migration chan string

	driveMu sync.Mutex
	// drives are the VM's drives, in its command line's order; fdsets
	// counts the fdsets ReplaceDrive added. Protected by driveMu.
	drives []driveSlot
	fdsets int
	// maxFile is the VMM's RLIMIT_FSIZE.
	maxFile int64

	mu sync.Mutex
	// shutdown is the last SHUTDOWN event's data; protected by mu.
	shutdown *qmp.ShutdownData
	// panicked is set by a GUEST_PANICKED event; protected by mu.
	panicked bool
	// stopping is set once Stop was called; protected by mu.
	stopping bool

	exited  chan struct{} // closed when QEMU was reaped; waitErr is then set
	waitErr error

	done chan struct{} // closed once exit is set and everything released
	exit vmm.ExitInfo
}

var _ vmm.VM = (*VM)(nil)

// Pid implements vmm.VM.
func (v *VM) Pid() int { return v.pid }

// QMP is the VM's monitor connection, for callers that need more than
// vmm.VM (snapshots: stop, migrate, cont). It closes when the VM ends.
func (v *VM) QMP() *qmp.Client { return v.qmp }

// Console returns the last 64 KiB of the guest's serial console.
func (v *VM) Console() []byte { return v.console.bytes() }

// WaitConsole blocks until marker has appeared on the console, the VM
// has ended, or ctx is done.
func (v *VM) WaitConsole(ctx context.Context, marker string) error {
	return v.console.wait(ctx, []byte(marker))
}

// Wait implements vmm.VM; every call gets its own channel.
func (v *VM) Wait() <-chan vmm.ExitInfo {
	ch := make(chan vmm.ExitInfo, 1)
	go func() {
		<-v.done
		ch <- v.exit
		close(ch)
	}()
	return ch
}

// Done is closed once the VM has ended and released everything.
func (v *VM) Done() <-chan struct{} { return v.done }

// Exit is how the VM ended; valid once Done is closed.
func (v *VM) Exit() vmm.ExitInfo {
	<-v.done
	return v.exit
}

// Save pauses the guest and writes its state to f: all of it, or with
// ignoreShared the devices only, the RAM staying in the shared memory
// file (vmm.Memory). The guest stays paused: Stop ends the VM, Continue
// runs it again. A Config with Incoming set to the file restores it.
func (v *VM) Save(ctx context.Context, f *os.File, ignoreShared bool) error {
	if _, err := v.qmp.Execute(ctx, "stop", nil); err != nil {
		return fmt.Errorf("vm %s: pause: %w", v.id, err)
	}
	if err := setMigrationCaps(ctx, v.qmp, ignoreShared); err != nil {
		return fmt.Errorf("vm %s: %w", v.id, err)
	}
	if err := v.qmp.SendFile(ctx, "snapshot", f); err != nil {
		return fmt.Errorf("vm %s: %w", v.id, err)
	}
	for len(v.migration) > 0 {
		<-v.migration
	}
	if _, err := v.qmp.Execute(ctx, "migrate", map[string]any{"uri": "fd:snapshot"}); err != nil {
		return fmt.Errorf("vm %s: save: %w", v.id, err)
	}
	for {
		select {
		case st := <-v.migration:
			switch st {
			case "completed":
				return nil
			case "failed", "cancelled":
				return fmt.Errorf("vm %s: save %s: %s", v.id, st, v.migrationError(ctx))
			}
		case <-v.done:
			return fmt.Errorf("vm %s: the vmm ended while saving: %s", v.id, v.exit)
		case <-ctx.Done():
			v.qmp.Execute(context.WithoutCancel(ctx), "migrate_cancel", nil)
			return fmt.Errorf("vm %s: save: %w", v.id, ctx.Err())
		}
	}
}

// waitIncoming waits for a restore (Config.Incoming) to complete.
func (v *VM) waitIncoming(ctx context.Context) error {
	for {
		select {
		case st := <-v.migration:
			switch st {
			case "completed":
				return nil
			case "failed", "cancelled":
				return fmt.Errorf("%s: %s", st, v.migrationError(ctx))
			}
		case <-v.exited:
			return errors.New("the vmm exited while reading the snapshot")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (v *VM) migrationError(ctx context.Context) string {
	r, err := v.qmp.Execute(ctx, "query-migrate", nil)
	if err != nil {
		return err.Error()
	}
	var q struct {
		Desc string `json:"error-desc"`
	}
	json.Unmarshal(r, &q)
	return q.Desc
}

// Continue runs a paused guest again (after a Save that is not followed
// by Stop).
func (v *VM) Continue(ctx context.Context) error {
	_, err := v.qmp.Execute(ctx, "cont", nil)
	return err
}

// stopGrace is how long a QMP quit may take before SIGKILL.
const stopGrace = 3 * time.Second

// Stop implements vmm.VM: QMP quit, then SIGKILL after stopGrace or when
// ctx is done; it returns once the process is gone and cleaned up.
func (v *VM) Stop(ctx context.Context) error {
	v.mu.Lock()
	v.stopping = true
	v.mu.Unlock()
	select {
	case <-v.done:
		return nil
	default:
	}
	qctx, cancel := context.WithTimeout(ctx, stopGrace)
	defer cancel()
	if err := v.qmp.Quit(qctx); err != nil {
		v.log.Debug("qmp quit failed; killing", "err", err)
		v.cmd.Process.Kill()
	}
	select {
	case <-v.done:
		return nil
	case <-qctx.Done():
	}
	v.cmd.Process.Kill()
	<-v.done
	return nil
}

func (v *VM) watchEvents() {
	defer v.events.Done()
	for ev := range v.qmp.Events() {
		switch ev.Name {
		case "SHUTDOWN":
			var d qmp.ShutdownData
			if json.Unmarshal(ev.Data, &d) == nil {
				v.mu.Lock()
				v.shutdown = &d
				v.mu.Unlock()
			}
		case "GUEST_PANICKED":
			v.mu.Lock()
			v.panicked = true
			v.mu.Unlock()
		case "MIGRATION":
			var d struct {
				Status string `json:"status"`
			}
			if json.Unmarshal(ev.Data, &d) == nil {
				select {
				case v.migration <- d.Status:
				default: // nobody waits: Save drains before it starts
				}
			}
		}
	}
}

// reap waits for QEMU to exit, classifies the exit, releases everything
// Start made, and only then closes done.
func (v *VM) reap() {
	<-v.exited
	err := v.waitErr
	// QEMU's last words (a SHUTDOWN event, console lines) were written
	// before it exited; read them to the end before judging.
	v.events.Wait()
	v.qmp.Close()
	v.copiers.Wait()
	v.exit = v.classify(err)
	v.release()
	v.mu.Lock()
	sd := v.shutdown
	v.mu.Unlock()
	v.log.Debug("vm ended", "exit", v.exit.String(), "shutdown_event", fmt.Sprintf("%+v", sd))
	close(v.done)
}

func (v *VM) classify(waitErr error) vmm.ExitInfo {
	info := vmm.ExitInfo{Code: 0}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			info.Signal = ws.Signal()
			info.Code = -1
		} else {
			info.Code = ee.ExitCode()
		}
	} else if waitErr != nil {
		info.Code = -1
	}
	v.mu.Lock()
	sd, panicked, stopping := v.shutdown, v.panicked, v.stopping
	v.mu.Unlock()
	consolePanic := v.console.lastLine(panicMarker)
	switch {
	case stopping:
		info.Reason = vmm.ExitStopped
	case panicked || (sd != nil && sd.Reason == "guest-panic") ||
		(sd != nil && sd.Guest && info.Signal == 0 && consolePanic != ""):
		// With panic=-1 a panic is a guest reset like a clean reboot:
		// the console's panic line tells them apart.
		info.Reason = vmm.ExitGuestPanic
		info.Detail = consolePanic
	case sd != nil && sd.Guest && info.Signal == 0 && info.Code == 0:
		info.Reason = vmm.ExitPoweroff
		info.Detail = sd.Reason
	default:
		info.Reason = vmm.ExitVMMExited
		info.Detail = v.stderr.lastLine("")
	}
	return info
}

// release undoes Start: sockets, the jail's mount point, the cgroup.
func (v *VM) release() {
	for _, p := range []string{v.qmpPath, v.agent} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			v.log.Warn("remove socket", "path", p, "err", err)
		}
	}
	if err := os.Remove(v.jailDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		v.log.Warn("remove jail dir", "path", v.jailDir, "err", err)
	}
	v.mu.Lock()
	cg := v.cgroup
	v.mu.Unlock()
	if cg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := cg.Remove(ctx); err != nil {
			v.log.Warn("remove vmm cgroup", "err", err)
		}
	}
}

func (v *VM) stderrDetail() string {
	if l := v.stderr.lastLine(""); l != "" {
		return fmt.Sprintf(" (qemu: %s)", strings.TrimSpace(l))
	}
	return ""
}

// MoveCgroup moves the VMM into a cgroup "<parent>/vmm" with the limits
// of the one it runs in, and removes the old one: a pooled VM becomes an
// instance's, whose cgroup the node made and accounts it by. On cgroup
// v1 the memory already charged moves with it where the kernel still
// can (memory.move_charge_at_immigrate); else it stays charged above.
func (v *VM) MoveCgroup(ctx context.Context, parent string) error {
	v.mu.Lock()
	old := v.cgroup
	v.mu.Unlock()
	if old == nil {
		return fmt.Errorf("vm %s has no cgroup to move: %w", v.id, errdefs.ErrInvalid)
	}
	to := &jail.Cgroup{Path: filepath.Join(parent, "vmm"), MemoryBytes: old.MemoryBytes, PidsMax: old.PidsMax}
	if err := to.Create(); err != nil {
		return fmt.Errorf("vm %s: %w", v.id, err)
	}
	to.MoveCharges()
	if err := to.Add(v.pid); err != nil {
		to.Remove(ctx)
		return fmt.Errorf("vm %s: %w", v.id, err)
	}
	v.mu.Lock()
	v.cgroup = to
	v.mu.Unlock()
	if err := old.Remove(ctx); err != nil {
		v.log.Warn("remove the cgroup the vmm left", "cgroup", old.Path, "err", err)
	}
	return nil
}
