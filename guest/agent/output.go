package agent

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/cube-platform/cube/errdefs"
)

// maxBuffered bounds what the agent holds of one stream that nobody has
// read yet. Past it the agent stops reading the pipe: the kernel's pipe
// buffer fills and the process blocks on write (back-pressure; nothing is
// dropped, and memory stays bounded however slowly the host reads).
const maxBuffered = 64 << 10

// output is one process stream (stdout, stderr, or a terminal) between
// its pipe and ReadOutput.
type output struct {
	mu sync.Mutex
	// base is the stream offset of data[0]: the host has acknowledged
	// every byte before it. Protected by mu.
	base uint64
	data []byte // protected by mu
	eof  bool   // protected by mu
	// abandoned: nobody will read again (the process's run was
	// replaced); the pump drains and drops. Protected by mu.
	abandoned bool
	changed   chan struct{} // closed and replaced on every change; protected by mu
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

// Preconditions: o.mu is held.
func (o *output) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// pump copies r into the buffer until EOF or an error (a terminal whose
// last slave closed reads EIO: that is its EOF), then closes r.
func (o *output) pump(r io.ReadCloser) {
	defer r.Close()
	buf := make([]byte, 32<<10)
	for {
		o.mu.Lock()
		for len(o.data) >= maxBuffered && !o.abandoned {
			ch := o.changed
			o.mu.Unlock()
			<-ch
			o.mu.Lock()
		}
		if o.abandoned {
			o.data = nil
		}
		room := min(len(buf), maxBuffered-len(o.data))
		o.mu.Unlock()
		n, err := r.Read(buf[:room])
		o.mu.Lock()
		if n > 0 {
			o.data = append(o.data, buf[:n]...)
		}
		if err != nil {
			o.eof = true
		}
		o.notifyLocked()
		done := o.eof
		o.mu.Unlock()
		if done {
			return
		}
	}
}

// abandon drops what the stream holds and will hold: its reader is gone
// for good. The pump keeps draining the pipe (so the writer never blocks
// on a reader that will not come) until EOF.
func (o *output) abandon() {
	o.mu.Lock()
	o.abandoned = true
	o.data = nil
	o.notifyLocked()
	o.mu.Unlock()
}

// closeEmpty marks a stream that has no pipe (stderr of a terminal) done.
func (o *output) closeEmpty() {
	o.mu.Lock()
	o.eof = true
	o.notifyLocked()
	o.mu.Unlock()
}

// read acknowledges the bytes before offset (they are dropped), waits
// for bytes past it or EOF, and returns at most max of them, keeping
// them until a later read acknowledges them.
func (o *output) read(ctx context.Context, offset uint64, max int) ([]byte, bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if offset < o.base || offset-o.base > uint64(len(o.data)) {
		return nil, false, fmt.Errorf("%w: offset %d is outside the unacknowledged bytes [%d, %d]", errdefs.ErrInvalid, offset, o.base, o.base+uint64(len(o.data)))
	}
	if n := int(offset - o.base); n > 0 {
		o.data = o.data[n:]
		o.base = offset
		if len(o.data) == 0 {
			o.data = nil // let the backing array go
		}
		o.notifyLocked()
	}
	for len(o.data) == 0 && !o.eof {
		ch := o.changed
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			o.mu.Lock()
			return nil, false, ctx.Err()
		}
		o.mu.Lock()
	}
	n := min(max, len(o.data))
	return append([]byte(nil), o.data[:n]...), o.eof && n == len(o.data), nil
}
