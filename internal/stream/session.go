package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// WindowSize of a terminal, the payload of a Resize frame.
type WindowSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// RunClient speaks the client side of a session on conn: it sends stdin
// (nil: none) and then CloseStdin, forwards resizes (nil: none), copies
// output to stdout and stderr (nil: discarded), and returns the exit code.
// Cancelling ctx closes conn, which ends the process on the far side.
func RunClient(ctx context.Context, conn io.ReadWriteCloser, stdin io.Reader, stdout, stderr io.Writer, resize <-chan WindowSize) (int, error) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	fw := NewWriter(conn)
	done := make(chan struct{})
	defer close(done)
	go func() {
		if stdin != nil {
			_, _ = io.Copy(fw.KindWriter(Stdin), stdin)
		}
		_ = fw.WriteFrame(CloseStdin, nil)
	}()
	if resize != nil {
		go func() {
			for {
				select {
				case ws, ok := <-resize:
					if !ok {
						return
					}
					b, _ := json.Marshal(ws)
					if fw.WriteFrame(Resize, b) != nil {
						return
					}
				case <-done:
					return
				}
			}
		}()
	}
	for {
		f, err := ReadFrame(conn)
		if err != nil {
			if ctx.Err() != nil {
				return -1, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return -1, errors.New("the session ended before the process exited")
			}
			return -1, err
		}
		switch f.Kind {
		case Stdout:
			if stdout != nil {
				_, _ = stdout.Write(f.Payload)
			}
		case Stderr:
			if stderr != nil {
				_, _ = stderr.Write(f.Payload)
			}
		case Exit:
			code, err := strconv.Atoi(string(f.Payload))
			if err != nil {
				return -1, fmt.Errorf("bad exit frame %q", f.Payload)
			}
			return code, nil
		case Error:
			return -1, errors.New(string(f.Payload))
		}
	}
}
