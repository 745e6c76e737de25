package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/internal/stream"
)

// WindowSize of a terminal.
type WindowSize = stream.WindowSize

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
	code, err := stream.RunClient(ctx, conn, stdin, stdout, stderr, resize)
	if err != nil {
		return 0, fmt.Errorf("exec: %w", err)
	}
	return code, nil
}
