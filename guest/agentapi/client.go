package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/containerd/ttrpc"

	"github.com/cube-platform/cube/errdefs"
)

// ErrMalformed marks an answer from the agent that breaks the API's
// bounds: the guest is broken or hostile. Errors wrapping it also wrap
// errdefs.ErrUnavailable.
var ErrMalformed = errors.New("malformed agent response")

// DefaultCallTimeout bounds every call but Wait and ReadOutput (which
// block until the guest has something to say) when ctx has no deadline.
// It is generous for TCG, where a guest runs ~10x slower.
const DefaultCallTimeout = 30 * time.Second

// Client is the host's side of the agent API. Its methods are safe for
// concurrent use; none panics on what the guest sends, and each checks
// the answer against the API's bounds before returning it.
type Client struct {
	conn    net.Conn
	session *sessionConn
	tc      *ttrpc.Client
	svc     AgentService
}

// NewClient speaks the agent API over conn (the VM's virtio-serial
// chardev socket): the first host of a fresh guest. The client owns
// conn: Close closes it.
func NewClient(conn net.Conn) *Client { return NewClientAfter(conn, 0) }

// NewClientAfter is NewClient for a host that continues the session of a
// host before it, whose last stream id was after (see LastStreamID): a
// VM restored from a suspend (see session.go).
func NewClientAfter(conn net.Conn, after uint32) *Client {
	sc := newSessionConn(conn, after)
	tc := ttrpc.NewClient(sc)
	return &Client{conn: conn, session: sc, tc: tc, svc: NewAgentClient(tc)}
}

// LastStreamID is the highest stream id this client used in its guest's
// session (a later host continues after it).
func (c *Client) LastStreamID() uint32 { return c.session.max.Load() }

// Close closes the connection; calls in flight fail.
func (c *Client) Close() error { return c.tc.Close() }

// Info is what Hello returns.
type Info struct {
	AgentVersion  string
	KernelRelease string
	BootID        string
	// Time is the guest's clock as it answered (untrusted).
	Time      time.Time
	SetupDone bool
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	// Code is the exit code, or 128+Signal.
	Code int
	// Signal ended the process when non-zero.
	Signal    syscall.Signal
	OOMKilled bool
	Started   time.Time
	Finished  time.Time
}

// Process names a container's main process (ExecID "") or an exec.
type Process struct {
	Container string
	ExecID    string
}

func (p Process) ref() *ProcessRef { return &ProcessRef{Container: p.Container, ExecId: p.ExecID} }

func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultCallTimeout)
}

func malformed(op, format string, args ...any) error {
	return fmt.Errorf("agent %s: %w: %w: %s", op, ErrMalformed, errdefs.ErrUnavailable, fmt.Sprintf(format, args...))
}

func checkInfo(op, what, s string) error {
	if len(s) > MaxInfoBytes || !utf8.ValidString(s) {
		return malformed(op, "%s is not %d bytes of UTF-8 at most", what, MaxInfoBytes)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return malformed(op, "%s holds control characters", what)
		}
	}
	return nil
}

// Hello asks the agent who it is; it answers once the agent serves, so the
// host uses it as the readiness probe.
func (c *Client) Hello(ctx context.Context) (Info, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	r, err := c.svc.Hello(ctx, &HelloRequest{})
	if err != nil {
		return Info{}, fromStatus("hello", err)
	}
	for what, s := range map[string]string{"agent version": r.GetAgentVersion(), "kernel release": r.GetKernelRelease(), "boot id": r.GetBootId()} {
		if err := checkInfo("hello", what, s); err != nil {
			return Info{}, err
		}
	}
	return Info{AgentVersion: r.GetAgentVersion(), KernelRelease: r.GetKernelRelease(), BootID: r.GetBootId(), SetupDone: r.GetSetupDone(),
		Time: time.Unix(0, r.GetTimeUnixNano())}, nil
}

// Setup configures the VM: once per boot, before Start or Exec.
func (c *Client) Setup(ctx context.Context, req *SetupRequest) error {
	if err := req.Validate(); err != nil {
		return fmt.Errorf("agent setup: %w", err)
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	_, err := c.svc.Setup(ctx, req)
	return fromStatus("setup", err)
}

// Resume tells the agent of a VM restored from a suspend: it reseeds the
// guest's RNG with entropy (none, or MinEntropyBytes to MaxEntropyBytes)
// and sets the guest's clock to timeUnixNano (the host's, Unix ns).
func (c *Client) Resume(ctx context.Context, timeUnixNano int64, entropy []byte) error {
	req := &ResumeRequest{TimeUnixNano: timeUnixNano, Entropy: entropy}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("agent resume: %w", err)
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	_, err := c.svc.Resume(ctx, req)
	return fromStatus("resume", err)
}

// Reset undoes a rehearsal Setup (see the proto).
func (c *Client) Reset(ctx context.Context) error {
	ctx, cancel := bounded(ctx)
	defer cancel()
	_, err := c.svc.Reset(ctx, &Empty{})
	return fromStatus("reset", err)
}

// Start starts the declared container and returns its guest pid.
func (c *Client) Start(ctx context.Context, container string) (int, error) {
	ref := &ProcessRef{Container: container}
	if err := ref.Validate(); err != nil {
		return 0, fmt.Errorf("agent start: %w", err)
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	r, err := c.svc.Start(ctx, &StartRequest{Container: container})
	if err != nil {
		return 0, fromStatus("start", err)
	}
	if r.GetPid() <= 0 || r.GetPid() > MaxPidsLimit {
		return 0, malformed("start", "pid %d", r.GetPid())
	}
	return int(r.GetPid()), nil
}

// Wait blocks until p has exited (or ctx ends) and returns how it ended.
func (c *Client) Wait(ctx context.Context, p Process) (ExitStatus, error) {
	if err := p.ref().Validate(); err != nil {
		return ExitStatus{}, fmt.Errorf("agent wait: %w", err)
	}
	r, err := c.svc.Wait(ctx, &WaitRequest{Process: p.ref()})
	if err != nil {
		return ExitStatus{}, fromStatus("wait", err)
	}
	return exitStatus("wait", r)
}

// WaitAny blocks until one of ps has exited (or ctx ends) and returns
// which one and how it ended.
func (c *Client) WaitAny(ctx context.Context, ps ...Process) (Process, ExitStatus, error) {
	req := &WaitAnyRequest{}
	for _, p := range ps {
		req.Processes = append(req.Processes, p.ref())
	}
	if err := req.Validate(); err != nil {
		return Process{}, ExitStatus{}, fmt.Errorf("agent wait any: %w", err)
	}
	r, err := c.svc.WaitAny(ctx, req)
	if err != nil {
		return Process{}, ExitStatus{}, fromStatus("wait any", err)
	}
	got := Process{Container: r.GetProcess().GetContainer(), ExecID: r.GetProcess().GetExecId()}
	found := false
	for _, p := range ps {
		found = found || p == got
	}
	if !found {
		return Process{}, ExitStatus{}, malformed("wait any", "process %q/%q was not asked for", clip(got.Container), clip(got.ExecID))
	}
	st, err := exitStatus("wait any", r.GetExit())
	if err != nil {
		return Process{}, ExitStatus{}, err
	}
	return got, st, nil
}

func exitStatus(op string, r *WaitResponse) (ExitStatus, error) {
	if r.GetExitCode() < 0 || r.GetExitCode() > 255 {
		return ExitStatus{}, malformed(op, "exit code %d", r.GetExitCode())
	}
	if r.GetSignal() < 0 || r.GetSignal() > 64 {
		return ExitStatus{}, malformed(op, "signal %d", r.GetSignal())
	}
	s, f := r.GetStartedUnixNano(), r.GetFinishedUnixNano()
	if s < 0 || f < 0 || (s > 0 && f > 0 && f < s) {
		return ExitStatus{}, malformed(op, "finished %d before started %d", f, s)
	}
	st := ExitStatus{Code: int(r.GetExitCode()), Signal: syscall.Signal(r.GetSignal()), OOMKilled: r.GetOomKilled()}
	if s > 0 {
		st.Started = time.Unix(0, s)
	}
	if f > 0 {
		st.Finished = time.Unix(0, f)
	}
	return st, nil
}

// Signal sends sig to p.
func (c *Client) Signal(ctx context.Context, p Process, sig syscall.Signal) error {
	req := &SignalRequest{Process: p.ref(), Signal: int32(sig)}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("agent signal: %w", err)
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	_, err := c.svc.Signal(ctx, req)
	return fromStatus("signal", err)
}

// Exec runs a process in a running container; req.Process.ExecId, chosen
// by the caller, names it from then on.
func (c *Client) Exec(ctx context.Context, req *ExecRequest) error {
	if err := req.Validate(); err != nil {
		return fmt.Errorf("agent exec: %w", err)
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	_, err := c.svc.Exec(ctx, req)
	return fromStatus("exec", err)
}

// WriteStdin writes all of b to p's stdin, in chunks the API allows.
func (c *Client) WriteStdin(ctx context.Context, p Process, b []byte) (int, error) {
	done := 0
	for done < len(b) {
		chunk := b[done:min(len(b), done+MaxChunk)]
		req := &WriteStdinRequest{Process: p.ref(), Data: chunk}
		if err := req.Validate(); err != nil {
			return done, fmt.Errorf("agent write stdin: %w", err)
		}
		cctx, cancel := bounded(ctx)
		r, err := c.svc.WriteStdin(cctx, req)
		cancel()
		if err != nil {
			return done, fromStatus("write stdin", err)
		}
		if r.GetWritten() == 0 || int(r.GetWritten()) > len(chunk) {
			return done, malformed("write stdin", "wrote %d of %d bytes", r.GetWritten(), len(chunk))
		}
		done += int(r.GetWritten())
	}
	return done, nil
}

// CloseStdin closes p's stdin.
func (c *Client) CloseStdin(ctx context.Context, p Process) error {
	if err := p.ref().Validate(); err != nil {
		return fmt.Errorf("agent close stdin: %w", err)
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	_, err := c.svc.CloseStdin(ctx, p.ref())
	return fromStatus("close stdin", err)
}

// ReadOutput blocks until p's stream has bytes past offset (the bytes
// the caller already has) or is at EOF, and returns at most max of them
// (io.EOF once the stream is done and drained). Asking again with the
// same offset returns the same bytes: an answer lost to ctx's end loses
// nothing.
func (c *Client) ReadOutput(ctx context.Context, p Process, s Stream, offset uint64, max int) ([]byte, error) {
	if max <= 0 || max > MaxChunk {
		max = MaxChunk
	}
	req := &ReadOutputRequest{Process: p.ref(), Stream: s, MaxBytes: uint32(max), Offset: offset}
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("agent read output: %w", err)
	}
	r, err := c.svc.ReadOutput(ctx, req)
	if err != nil {
		return nil, fromStatus("read output", err)
	}
	if len(r.GetData()) > max {
		return nil, malformed("read output", "%d bytes for a read of %d", len(r.GetData()), max)
	}
	if len(r.GetData()) == 0 {
		if !r.GetEof() {
			return nil, malformed("read output", "no bytes and no EOF")
		}
		return nil, io.EOF
	}
	return r.GetData(), nil
}

// readPoll bounds one ReadOutput of CopyOutput: a quiet stream is asked
// again (at the same offset) rather than waited on forever.
const readPoll = 10 * time.Second

// CopyOutput copies p's stream to w until EOF, an error or ctx's end,
// and returns how many bytes it copied.
func (c *Client) CopyOutput(ctx context.Context, p Process, s Stream, w io.Writer) (int64, error) {
	return c.CopyOutputAt(ctx, p, s, w, 0)
}

// CopyOutputAt is CopyOutput from offset off of the stream (a host that
// resumes a VM goes on where the one before stopped); it returns the
// offset it got to.
func (c *Client) CopyOutputAt(ctx context.Context, p Process, s Stream, w io.Writer, off int64) (int64, error) {
	n := off
	for {
		rctx, cancel := context.WithTimeout(ctx, readPoll)
		b, err := c.ReadOutput(rctx, p, s, uint64(n), MaxChunk)
		cancel()
		if err == io.EOF {
			return n, nil
		}
		if errors.Is(err, errdefs.ErrTimeout) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return n, err
		}
		m, err := w.Write(b)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
}

// ResizePty sets p's terminal size.
func (c *Client) ResizePty(ctx context.Context, p Process, rows, cols uint16) error {
	req := &ResizePtyRequest{Process: p.ref(), Rows: uint32(rows), Cols: uint32(cols)}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("agent resize: %w", err)
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	_, err := c.svc.ResizePty(ctx, req)
	return fromStatus("resize", err)
}

// ProcState is one process in State's answer.
type ProcState struct {
	Process Process
	Status  Status
	Pid     int
	// Exit is set once Status is STATUS_EXITED.
	Exit ExitStatus
}

// State lists the declared containers and their execs.
func (c *Client) State(ctx context.Context) ([]ProcState, error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	r, err := c.svc.State(ctx, &Empty{})
	if err != nil {
		return nil, fromStatus("state", err)
	}
	if len(r.GetProcesses()) > MaxContainers*(1+MaxExecs) {
		return nil, malformed("state", "%d processes", len(r.GetProcesses()))
	}
	out := make([]ProcState, 0, len(r.GetProcesses()))
	for _, p := range r.GetProcesses() {
		if err := p.GetProcess().Validate(); err != nil {
			return nil, malformed("state", "%v", err)
		}
		if _, ok := Status_name[int32(p.GetStatus())]; !ok || p.GetStatus() == Status_STATUS_UNSPECIFIED {
			return nil, malformed("state", "status %d", p.GetStatus())
		}
		if p.GetPid() < 0 || p.GetPid() > MaxPidsLimit {
			return nil, malformed("state", "pid %d", p.GetPid())
		}
		ps := ProcState{Process: Process{p.GetProcess().GetContainer(), p.GetProcess().GetExecId()}, Status: p.GetStatus(), Pid: int(p.GetPid())}
		if p.GetStatus() == Status_STATUS_EXITED {
			if ps.Exit, err = exitStatus("state", p.GetExit()); err != nil {
				return nil, err
			}
		}
		out = append(out, ps)
	}
	return out, nil
}

// Shutdown asks the agent to stop every process, unmount and reboot the
// VM. The connection may drop before the answer arrives: an EOF after the
// request went out counts as success.
func (c *Client) Shutdown(ctx context.Context) error {
	ctx, cancel := bounded(ctx)
	defer cancel()
	_, err := c.svc.Shutdown(ctx, &Empty{})
	if err != nil && (errors.Is(err, ttrpc.ErrClosed) || errors.Is(err, io.EOF)) {
		return nil
	}
	return fromStatus("shutdown", err)
}
