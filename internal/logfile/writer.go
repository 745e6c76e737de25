// Package logfile stores container output as CRI-format log files with
// size-based rotation, and reads them back (tail, since/until, follow across
// rotations). Each line of a file is
//
//	<RFC3339Nano UTC time> <stdout|stderr> <F|P> <text>
//
// where F ends a line and P is a piece of a longer one (more than MaxLine
// bytes, or the stream closed mid-line). The shim writes these files and
// the node agent reads them; the package depends on nothing of Cube's.
package logfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// MaxLine is the longest text of one record; longer lines are split into
// P records.
const MaxLine = 16 << 10

// Stream names.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Options tune a Writer. The zero value gives the defaults.
type Options struct {
	// MaxBytes is the size at which the file is rotated. Default 10 MiB.
	MaxBytes int64
	// MaxFiles is how many files are kept, the live one included: path,
	// path.1 ... path.<MaxFiles-1> (oldest). Default 3.
	MaxFiles int
	// Now is the clock stamped on records. Default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 10 << 20
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = 3
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Writer appends records to one log file and rotates it. The streams of
// one container share a Writer; it is safe for concurrent use.
type Writer struct {
	path string
	opts Options

	mu     sync.Mutex
	f      *os.File // protected by mu; nil once closed
	size   int64    // protected by mu
	recBuf []byte   // protected by mu
}

// NewWriter opens (appending to) or creates the log file at path.
func NewWriter(path string, opts Options) (*Writer, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log file %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("log file %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("log file %s: %w", path, err)
	}
	return &Writer{path: path, opts: opts, f: f, size: fi.Size()}, nil
}

// Stream returns a writer for one stream ("stdout" or "stderr") that turns
// whatever it is given into records, one per line. Close it when the
// stream ends so a trailing unterminated line is stored (as P).
func (w *Writer) Stream(name string) io.WriteCloser {
	return &streamWriter{w: w, name: name}
}

// Close closes the file. Streams written to afterwards fail.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// writeRecord appends one record, rotating first if it would not fit.
func (w *Writer) writeRecord(stream string, full bool, text []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return errors.New("log file is closed")
	}
	tag := byte('P')
	if full {
		tag = 'F'
	}
	b := w.opts.Now().UTC().AppendFormat(w.recBuf[:0], time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, stream...)
	b = append(b, ' ', tag, ' ')
	b = append(b, text...)
	b = append(b, '\n')
	w.recBuf = b
	if w.size > 0 && w.size+int64(len(b)) > w.opts.MaxBytes {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(b)
	w.size += int64(n)
	if err != nil {
		return fmt.Errorf("write log %s: %w", w.path, err)
	}
	return nil
}

// rotate shifts path -> path.1 -> ... -> path.<MaxFiles-1> (dropping the
// oldest) and starts a new path. Preconditions: w.mu held.
func (w *Writer) rotate() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("rotate log %s: %w", w.path, err)
	}
	w.f = nil
	if w.opts.MaxFiles == 1 {
		// A new file rather than a truncated one, so a follower notices.
		if err := os.Remove(w.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log %s: %w", w.path, err)
		}
	}
	for i := w.opts.MaxFiles - 1; i >= 1; i-- {
		src := w.path
		if i > 1 {
			src = w.path + "." + strconv.Itoa(i-1)
		}
		if err := os.Rename(src, w.path+"."+strconv.Itoa(i)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log %s: %w", w.path, err)
		}
	}
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("rotate log %s: %w", w.path, err)
	}
	w.f, w.size = f, 0
	return nil
}

// streamWriter splits one stream into records.
type streamWriter struct {
	w    *Writer
	name string

	mu      sync.Mutex
	pending []byte // text after the last newline; protected by mu
}

func (s *streamWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.pending = append(s.pending, p...)
			return n, s.flushLong()
		}
		s.pending = append(s.pending, p[:i]...)
		p = p[i+1:]
		if err := s.flushLong(); err != nil {
			return n - len(p), err
		}
		err := s.w.writeRecord(s.name, true, s.pending)
		s.pending = s.pending[:0]
		if err != nil {
			return n - len(p), err
		}
	}
	return n, nil
}

// flushLong writes MaxLine-sized P records while more than MaxLine bytes
// are pending. Preconditions: s.mu held.
func (s *streamWriter) flushLong() error {
	off := 0
	for len(s.pending)-off > MaxLine {
		if err := s.w.writeRecord(s.name, false, s.pending[off:off+MaxLine]); err != nil {
			return err
		}
		off += MaxLine
	}
	if off > 0 {
		s.pending = append(s.pending[:0], s.pending[off:]...)
	}
	return nil
}

// Close stores an unterminated last line as a P record.
func (s *streamWriter) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return nil
	}
	err := s.w.writeRecord(s.name, false, s.pending)
	s.pending = nil
	return err
}
