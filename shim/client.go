package shim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/internal/stream"
	"github.com/cube-platform/cube/sandbox"
)

// Client talks to one shim over its unix socket. It is safe for concurrent
// use and holds no connection between calls.
type Client struct {
	socket string
	http   *http.Client
}

// Dial returns a client for the shim serving socketPath. It does not
// connect; Ping tells whether a shim answers.
func Dial(socketPath string) *Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socketPath)
	}
	return &Client{
		socket: socketPath,
		http: &http.Client{Transport: &http.Transport{
			DialContext: dial,
			// One request per connection: long polls and exec sessions
			// come and go, and an idle pool would outlive its users.
			DisableKeepAlives: true,
		}},
	}
}

// Socket is the path the client talks to.
func (c *Client) Socket() string { return c.socket }

// Ping succeeds when a shim answers on the socket.
func (c *Client) Ping(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/ping", nil, nil)
}

// State returns the shim's state once its Version is greater than after,
// or after about 25s without change (then the unchanged state). after 0
// returns at once.
func (c *Client) State(ctx context.Context, after uint64) (State, error) {
	var st State
	err := c.do(ctx, http.MethodGet, "/state?after="+strconv.FormatUint(after, 10), nil, &st)
	return st, err
}

// StartRequest is the body of Start.
type StartRequest struct {
	// Interface is the network interface the node made in the sandbox's
	// namespace, which the sandbox connects to before its first start
	// (see sandbox.Sandbox.Connect). Nil: no network to connect.
	Interface *sandbox.Interface `json:"interface,omitempty"`
}

// Start lets a shim launched with Config.AwaitStart start its containers:
// the caller has made their network ready, and iface (nil: none) is the
// interface it made. It returns at once (State reports the starts) and
// does nothing on a shim that may start already.
func (c *Client) Start(ctx context.Context, iface *sandbox.Interface) error {
	return c.do(ctx, http.MethodPost, "/start", StartRequest{Interface: iface}, nil)
}

// Stop stops every container (SIGTERM, SIGKILL after grace) and disables
// restarts for good. It returns once all have exited.
func (c *Client) Stop(ctx context.Context, grace time.Duration) error {
	return c.do(ctx, http.MethodPost, "/stop?grace="+grace.String(), nil, nil)
}

// Suspend saves the sandbox to disk and stops it (see
// sandbox.Suspender); the containers keep their phase and State says
// PhaseSuspended. It returns once the sandbox is saved, and does nothing
// on a suspended one. A backend that cannot suspend is ErrInvalid; a
// sandbox not created or stopped is ErrConflict.
func (c *Client) Suspend(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/suspend", nil, nil)
}

// Resume runs a suspended sandbox again, in the shim that suspended it or
// in a new one whose sandbox loaded the saved state; it returns once it
// runs, and does nothing on a running one.
func (c *Client) Resume(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/resume", nil, nil)
}

// Shutdown stops the containers with the shim's configured grace, destroys
// the sandbox, removes the shim's socket, pid and config files, and makes
// the shim exit. Container logs stay.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/shutdown", nil, nil)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://shim"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.unavailable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return responseError(resp)
	}
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("shim %s: decode %s response: %w", c.socket, path, err)
	}
	return nil
}

func (c *Client) unavailable(err error) error {
	var ne *net.OpError
	if errors.As(err, &ne) && ne.Op == "dial" {
		return fmt.Errorf("shim %s: nothing answers (%w): %w", c.socket, errdefs.ErrUnavailable, err)
	}
	return fmt.Errorf("shim %s: %w", c.socket, err)
}

// responseError turns an error response into an error of its errdefs class.
func responseError(resp *http.Response) error {
	var eb errorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
		eb.Error = string(bytes.TrimSpace(b))
	}
	class := map[int]error{
		http.StatusBadRequest: errdefs.ErrInvalid,
		http.StatusNotFound:   errdefs.ErrNotFound,
		http.StatusConflict:   errdefs.ErrConflict,
	}[resp.StatusCode]
	if class == nil {
		return fmt.Errorf("shim: %s (HTTP %d)", eb.Error, resp.StatusCode)
	}
	return fmt.Errorf("shim: %s: %w", eb.Error, class)
}

// ExecConn starts an exec session and returns the upgraded connection, on
// which the caller speaks internal/stream frames: it sends Stdin,
// CloseStdin and Resize; the shim sends Stdout, Stderr and finally Exit or
// Error. The node agent splices it to its own client without decoding.
// Closing the connection before Exit kills the process. ctx bounds the
// handshake only; the session lasts until the connection is closed.
func (c *Client) ExecConn(ctx context.Context, container string, req ExecRequest) (net.Conn, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, c.unavailable(err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	hreq, err := http.NewRequest(http.MethodPost, "http://shim/exec?container="+url.QueryEscape(container), bytes.NewReader(body))
	if err != nil {
		conn.Close()
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", upgradeProto)
	br := bufio.NewReader(conn)
	if err := hreq.Write(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("shim %s: exec: %w", c.socket, err)
	}
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("shim %s: exec: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, responseError(resp)
	}
	if !stop() {
		conn.Close()
		return nil, fmt.Errorf("shim %s: exec: %w", c.socket, ctx.Err())
	}
	conn.SetDeadline(time.Time{})
	return &bufferedConn{Conn: conn, r: br}, nil
}

// bufferedConn reads what the HTTP response reader already buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// Exec runs a command in a running container and returns its exit code.
// stdin (may be nil) is sent until EOF; stdout and stderr (may be nil)
// receive the output (with a TTY, everything arrives on stdout); resize
// (may be nil) carries terminal size changes. Cancelling ctx kills the
// process.
func (c *Client) Exec(ctx context.Context, container string, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer, resize <-chan sandbox.WindowSize) (int, error) {
	conn, err := c.ExecConn(ctx, container, req)
	if err != nil {
		return -1, err
	}
	defer conn.Close()
	code, err := stream.RunClient(ctx, conn, stdin, stdout, stderr, resize)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", container, err)
	}
	return code, nil
}
