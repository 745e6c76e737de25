package stream

import (
	"bytes"
	"context"
	"io"
	"testing"
)

// FuzzReadFrame feeds arbitrary bytes, as a hostile peer on an exec
// connection would send them. Reading must never panic, never return a
// payload over MaxFrame, and every frame it returns must re-encode to
// exactly the bytes it was read from.
func FuzzReadFrame(f *testing.F) {
	var seed bytes.Buffer
	w := NewWriter(&seed)
	_ = w.WriteFrame(Stdin, []byte("echo hi\n"))
	_ = w.WriteFrame(Resize, []byte(`{"rows":24,"cols":80}`))
	_ = w.WriteFrame(CloseStdin, nil)
	f.Add(seed.Bytes())
	f.Add([]byte{byte(Stdout), 0xff, 0xff, 0xff, 0xff}) // claims 4 GiB
	f.Add([]byte{byte(Exit), 0, 0, 0, 9, '1'})          // short payload
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var again bytes.Buffer
		rw := NewWriter(&again)
		consumed := 0
		for {
			fr, err := ReadFrame(r)
			if err != nil {
				break
			}
			if len(fr.Payload) > MaxFrame {
				t.Fatalf("payload of %d bytes exceeds MaxFrame", len(fr.Payload))
			}
			if err := rw.WriteFrame(fr.Kind, fr.Payload); err != nil {
				t.Fatal(err)
			}
			consumed = len(data) - r.Len()
		}
		if !bytes.Equal(again.Bytes(), data[:consumed]) {
			t.Fatalf("frames re-encode to %x; want the %d bytes read, %x", again.Bytes(), consumed, data[:consumed])
		}
	})
}

// FuzzRunClient plays a hostile server to the client side of a session:
// whatever arrives, RunClient returns (no panic, no hang) and a returned
// exit code came from a well-formed Exit frame.
func FuzzRunClient(f *testing.F) {
	var seed bytes.Buffer
	w := NewWriter(&seed)
	_ = w.WriteFrame(Stdout, []byte("hi\n"))
	_ = w.WriteFrame(Stderr, []byte("oops\n"))
	_ = w.WriteFrame(Exit, []byte("3"))
	f.Add(seed.Bytes())
	f.Add([]byte{byte(Exit), 0, 0, 0, 2, '-', 'x'})
	f.Add([]byte{byte(Error), 0, 0, 0, 4, 'b', 'o', 'o', 'm'})
	f.Fuzz(func(t *testing.T, data []byte) {
		conn := &fakeConn{r: bytes.NewReader(data)}
		code, err := RunClient(context.Background(), conn, nil, io.Discard, io.Discard, nil)
		if err != nil && code != -1 {
			t.Fatalf("RunClient = %d, %v; want -1 with an error", code, err)
		}
	})
}

// fakeConn is a one-way in-memory connection: reads come from r, writes
// are dropped. Only the bytes matter to these fuzz targets.
type fakeConn struct{ r io.Reader }

func (c *fakeConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *fakeConn) Close() error                { return nil }
