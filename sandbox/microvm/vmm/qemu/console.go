package qemu

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// tailBytes is how much of a stream (console, QEMU's stderr) is kept in
// memory: enough for a panic message and a boot marker.
const tailBytes = 64 << 10

// tail keeps the last tailBytes of a stream, tees it to an optional file
// capped at vmm.MaxConsoleLogBytes, and wakes waiters on every write. The
// guest controls the console: nothing here grows without bound.
type tail struct {
	mu sync.Mutex
	// buf holds the newest bytes; protected by mu.
	buf []byte
	// total bytes seen; protected by mu.
	total int64
	// changed is closed and replaced on every write; protected by mu.
	changed chan struct{}
	// closed is set when the stream ended; protected by mu.
	closed bool

	file    *os.File // may be nil; only the copier goroutine writes it
	written int64
	limit   int64 // of the file
}

// consoleLogLimit caps the console log file; a variable so a test can
// flood past it quickly.
var consoleLogLimit int64 = vmm.MaxConsoleLogBytes

func newTail(file *os.File) *tail {
	return &tail{changed: make(chan struct{}), file: file, limit: consoleLogLimit}
}

// copyFrom reads r until EOF; run it in its own goroutine.
func (t *tail) copyFrom(r io.Reader) {
	b := make([]byte, 32<<10)
	for {
		n, err := r.Read(b)
		if n > 0 {
			t.write(b[:n])
		}
		if err != nil {
			break
		}
	}
	t.mu.Lock()
	t.closed = true
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
	if t.file != nil {
		t.file.Close()
	}
}

func (t *tail) write(p []byte) {
	if t.file != nil && t.written < t.limit {
		q := p
		if room := t.limit - t.written; int64(len(q)) > room {
			q = q[:room]
		}
		n, _ := t.file.Write(q)
		t.written += int64(n)
		if t.written >= t.limit {
			fmt.Fprintf(t.file, "\n[console log truncated at %d bytes]\n", t.limit)
			t.written = t.limit // also when a write failed short
		}
	}
	t.mu.Lock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailBytes {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailBytes:]...)
	}
	t.total += int64(len(p))
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// bytes returns a copy of the kept tail.
func (t *tail) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.buf)
}

// wait blocks until the kept tail contains marker, the stream ends, or ctx
// is done.
func (t *tail) wait(ctx context.Context, marker []byte) error {
	for {
		t.mu.Lock()
		found := bytes.Contains(t.buf, marker)
		closed, ch := t.closed, t.changed
		t.mu.Unlock()
		if found {
			return nil
		}
		if closed {
			return fmt.Errorf("console ended before %q appeared: %w", marker, errdefs.ErrUnavailable)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %q on the console: %w: %w", marker, ctx.Err(), errdefs.ErrTimeout)
		}
	}
}

// lastLine returns the last non-empty line of the tail containing substr
// (or the last line at all when substr is empty), at most 200 bytes.
func (t *tail) lastLine(substr string) string {
	b := t.bytes()
	lines := bytes.Split(b, []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		l := bytes.TrimSpace(lines[i])
		if len(l) == 0 || !bytes.Contains(l, []byte(substr)) {
			continue
		}
		if len(l) > 200 {
			l = l[:200]
		}
		return string(bytes.ToValidUTF8(l, []byte("?")))
	}
	return ""
}
