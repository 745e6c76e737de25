// Package stream multiplexes an interactive process session (stdin, stdout,
// stderr, terminal resizes, exit code) over one byte stream: a hijacked HTTP
// connection between the CLI, the apiserver, the node agent and the shim.
// Each frame is a one-byte kind, a big-endian uint32 length and the payload.
package stream

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// Kind of a frame.
type Kind byte

const (
	Stdin      Kind = 0
	Stdout     Kind = 1
	Stderr     Kind = 2
	Resize     Kind = 3 // payload: JSON {"rows":R,"cols":C}
	Exit       Kind = 4 // payload: decimal exit code
	CloseStdin Kind = 5 // no payload: stdin reached EOF
	Error      Kind = 6 // payload: error message; the session ends
)

// MaxFrame bounds one frame's payload so a peer cannot make us allocate
// without limit.
const MaxFrame = 1 << 20

// Frame is one unit on the wire.
type Frame struct {
	Kind    Kind
	Payload []byte
}

// Writer writes frames; safe for concurrent use.
type Writer struct {
	mu sync.Mutex
	w  io.Writer // protected by mu
}

// NewWriter returns a frame writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteFrame writes one frame.
func (fw *Writer) WriteFrame(k Kind, p []byte) error {
	if len(p) > MaxFrame {
		return fmt.Errorf("stream: frame of %d bytes exceeds %d", len(p), MaxFrame)
	}
	var hdr [5]byte
	hdr[0] = byte(k)
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(p)))
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if _, err := fw.w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := fw.w.Write(p)
	return err
}

// KindWriter returns an io.Writer that wraps every write in a frame of kind k.
func (fw *Writer) KindWriter(k Kind) io.Writer { return kindWriter{fw, k} }

type kindWriter struct {
	fw *Writer
	k  Kind
}

func (kw kindWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += MaxFrame {
		end := min(off+MaxFrame, len(p))
		if err := kw.fw.WriteFrame(kw.k, p[off:end]); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

// ReadFrame reads one frame from r.
func ReadFrame(r io.Reader) (Frame, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
		return Frame{}, fmt.Errorf("stream: frame of %d bytes exceeds %d", n, MaxFrame)
	}
	f := Frame{Kind: Kind(hdr[0]), Payload: make([]byte, n)}
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, fmt.Errorf("stream: short frame: %w", err)
	}
	return f, nil
}
