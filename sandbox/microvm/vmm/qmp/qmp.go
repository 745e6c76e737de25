// Package qmp is a small client of QEMU's machine protocol (QMP) over a
// stream socket: the capabilities handshake, commands with replies, and
// asynchronous events. QEMU runs the guest, so everything it sends is
// treated as hostile: every line is bounded, every reply is matched by id,
// and a malformed line ends the connection with an error instead of
// crashing the caller.
//
// It depends on nothing but the standard library and x/sys/unix.
package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
)

// MaxLine bounds one QMP message. QEMU's replies to the commands we send are
// a few KiB; a larger line is a broken or hostile peer.
const MaxLine = 1 << 20

// Event is an asynchronous QMP event.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data,omitempty"`
	// Timestamp as QEMU reported it.
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// ShutdownData is the data of a SHUTDOWN event.
type ShutdownData struct {
	// Guest is true when the guest caused it.
	Guest bool `json:"guest"`
	// Reason: "guest-shutdown", "guest-reset", "guest-panic",
	// "host-qmp-quit", "host-signal", ...
	Reason string `json:"reason"`
}

// Error is an error reply of QEMU's.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp: %s: %s", e.Class, e.Desc) }

type message struct {
	QMP    json.RawMessage `json:"QMP,omitempty"`
	Event  string          `json:"event,omitempty"`
	Return json.RawMessage `json:"return,omitempty"`
	Error  *Error          `json:"error,omitempty"`
	ID     json.RawMessage `json:"id,omitempty"`
}

type reply struct {
	ret json.RawMessage
	err error
}

// Client is one QMP connection. It is safe for concurrent use; commands
// are sent one at a time.
type Client struct {
	conn   net.Conn
	events chan Event

	cmdMu sync.Mutex // serializes commands

	mu sync.Mutex
	// pending is the reply slot of the command in flight, keyed by its
	// id; protected by mu.
	pending map[uint64]chan reply
	// nextID numbers commands; protected by mu.
	nextID uint64
	// err is why the reader stopped; protected by mu.
	err error

	done chan struct{} // closed when the reader stops
}

// EventBuffer is how many unread events the client keeps; newer events
// beyond it are dropped (and counted), so a chatty QEMU cannot block the
// reader or grow memory.
const EventBuffer = 64

// Dial connects to a QMP unix socket and completes the handshake.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to qmp socket %s: %w", path, err)
	}
	c, err := New(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// New runs the QMP handshake on conn (greeting, qmp_capabilities) and
// starts reading events. The client owns conn from then on.
func New(ctx context.Context, conn net.Conn) (*Client, error) {
	c := &Client{
		conn:    conn,
		events:  make(chan Event, EventBuffer),
		pending: map[uint64]chan reply{},
		done:    make(chan struct{}),
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	line, err := readLine(br)
	stop()
	if err != nil {
		return nil, fmt.Errorf("qmp greeting: %w", ctxErr(ctx, err))
	}
	var greet message
	if err := json.Unmarshal(line, &greet); err != nil || greet.QMP == nil {
		return nil, fmt.Errorf("qmp greeting %.80q is not a qmp greeting: %w", line, errdefs.ErrInvalid)
	}
	conn.SetReadDeadline(time.Time{})
	go c.read(br)
	if _, err := c.Execute(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp capabilities: %w", err)
	}
	return c, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ctx.Err(), errdefs.ErrTimeout)
	}
	return err
}

// readLine reads one '\n'-terminated line of at most MaxLine bytes.
func readLine(br *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > MaxLine {
			return nil, fmt.Errorf("qmp message longer than %d bytes: %w", MaxLine, errdefs.ErrInvalid)
		}
		buf = append(buf, frag...)
		if err == nil {
			return bytes.TrimSpace(buf), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

func (c *Client) read(br *bufio.Reader) {
	err := c.readLoop(br)
	c.mu.Lock()
	c.err = err
	for id, ch := range c.pending {
		ch <- reply{err: fmt.Errorf("qmp connection lost: %w", err)}
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.events)
	close(c.done)
}

func (c *Client) readLoop(br *bufio.Reader) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			continue
		}
		var m message
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("malformed qmp message %.80q: %w", line, errdefs.ErrInvalid)
		}
		if m.Event != "" {
			var ev Event
			if err := json.Unmarshal(line, &ev); err != nil {
				return fmt.Errorf("malformed qmp event %.80q: %w", line, errdefs.ErrInvalid)
			}
			select {
			case c.events <- ev:
			default: // dropped: the reader never blocks on a slow consumer
			}
			continue
		}
		id, err := strconv.ParseUint(string(m.ID), 10, 64)
		if err != nil {
			return fmt.Errorf("qmp reply %.80q without a valid id: %w", line, errdefs.ErrInvalid)
		}
		c.mu.Lock()
		ch, ok := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if !ok {
			continue // a reply to a command whose caller gave up
		}
		if m.Error != nil {
			ch <- reply{err: m.Error}
		} else {
			ch <- reply{ret: m.Return}
		}
	}
}

// Execute runs one command with args (nil or a JSON-marshallable value)
// and returns its "return" value. An error reply is an *Error.
func (c *Client) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	return c.execute(ctx, command, args, nil)
}

// SendFile hands f to QEMU under name (QMP getfd, the descriptor passed
// with SCM_RIGHTS), for commands that take "fd:name", such as a migration
// to a snapshot file: a jailed QEMU can open no path and spawn nothing.
// The connection must be a unix socket.
func (c *Client) SendFile(ctx context.Context, name string, f *os.File) error {
	_, err := c.ExecuteFile(ctx, "getfd", map[string]string{"fdname": name}, f)
	return err
}

// ExecuteFile runs a command that takes a descriptor (getfd, add-fd),
// passing f with the command (SCM_RIGHTS). The connection must be a unix
// socket.
func (c *Client) ExecuteFile(ctx context.Context, command string, args any, f *os.File) (json.RawMessage, error) {
	if _, ok := c.conn.(*net.UnixConn); !ok {
		return nil, fmt.Errorf("qmp %s: not a unix socket: %w", command, errdefs.ErrInvalid)
	}
	return c.execute(ctx, command, args, f)
}

func (c *Client) execute(ctx context.Context, command string, args any, f *os.File) (json.RawMessage, error) {
	c.cmdMu.Lock()
	defer c.cmdMu.Unlock()
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: connection lost: %w", command, err)
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	cleanup := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}

	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	}
	if f != nil {
		rights := unix.UnixRights(int(f.Fd()))
		_, _, err = c.conn.(*net.UnixConn).WriteMsgUnix(append(b, '\n'), rights, nil)
	} else {
		_, err = c.conn.Write(append(b, '\n'))
	}
	c.conn.SetWriteDeadline(time.Time{})
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, r.err)
		}
		return r.ret, nil
	case <-ctx.Done():
		cleanup()
		return nil, fmt.Errorf("qmp %s: %w", command, ctxErr(ctx, ctx.Err()))
	}
}

// Status is the reply of query-status.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // "running", "paused", "shutdown", ...
}

// QueryStatus runs query-status.
func (c *Client) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	ret, err := c.Execute(ctx, "query-status", nil)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(ret, &s); err != nil {
		return s, fmt.Errorf("qmp query-status reply %.80q: %w", ret, errdefs.ErrInvalid)
	}
	return s, nil
}

// Quit asks QEMU to exit. QEMU may close the connection before its reply
// arrives; that counts as success.
func (c *Client) Quit(ctx context.Context) error {
	_, err := c.Execute(ctx, "quit", nil)
	if err != nil {
		select {
		case <-c.done:
			return nil
		default:
		}
	}
	return err
}

// Events delivers asynchronous events until the connection ends, then is
// closed.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the connection has ended; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the connection ended (io.EOF when QEMU closed it), or nil
// while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection and waits for the reader to stop.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

var _ io.Closer = (*Client)(nil)
