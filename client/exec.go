package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/internal/stream"
)

// WindowSize of a terminal.
type WindowSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Exec runs a command in an instance's container and returns its exit code.
// stdin may be nil; resize may be nil.
func (c *Client) Exec(ctx context.Context, name string, req v1.ExecRequest, stdin io.Reader, stdout, stderr io.Writer, resize <-chan WindowSize) (int, error) {
	b, _ := json.Marshal(req)
	hreq, err := c.newRequest(ctx, http.MethodPost, instPath(name, "exec"), nil, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", v1.StreamProtocol)
	resp, err := c.do(hreq)
	if err != nil {
		return 0, err
	}
	conn, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		resp.Body.Close()
		return 0, fmt.Errorf("exec: server did not switch protocols (answered %s)", resp.Status)
	}
	defer conn.Close()
	return RunSession(ctx, conn, stdin, stdout, stderr, resize)
}

// RunSession speaks the client side of the framed exec protocol on conn.
func RunSession(ctx context.Context, conn io.ReadWriteCloser, stdin io.Reader, stdout, stderr io.Writer, resize <-chan WindowSize) (int, error) {
	fw := stream.NewWriter(conn)
	done := make(chan struct{})
	defer close(done)
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	if stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := stdin.Read(buf)
				if n > 0 {
					if fw.WriteFrame(stream.Stdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					_ = fw.WriteFrame(stream.CloseStdin, nil)
					return
				}
			}
		}()
	} else {
		_ = fw.WriteFrame(stream.CloseStdin, nil)
	}
	if resize != nil {
		go func() {
			for {
				select {
				case ws, ok := <-resize:
					if !ok {
						return
					}
					b, _ := json.Marshal(ws)
					if fw.WriteFrame(stream.Resize, b) != nil {
						return
					}
				case <-done:
					return
				}
			}
		}()
	}
	for {
		f, err := stream.ReadFrame(conn)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return 0, errors.New("exec: the connection closed before the process exited")
			}
			return 0, fmt.Errorf("exec: %w", err)
		}
		switch f.Kind {
		case stream.Stdout:
			if stdout != nil {
				_, _ = stdout.Write(f.Payload)
			}
		case stream.Stderr:
			if stderr != nil {
				_, _ = stderr.Write(f.Payload)
			}
		case stream.Exit:
			code, err := strconv.Atoi(string(f.Payload))
			if err != nil {
				return 0, fmt.Errorf("exec: bad exit frame %q", f.Payload)
			}
			return code, nil
		case stream.Error:
			return 0, fmt.Errorf("exec: %s", f.Payload)
		}
	}
}
