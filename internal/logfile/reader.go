package logfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ReadOptions select what Read returns.
type ReadOptions struct {
	// Follow keeps reading records as they are written, across
	// rotations, until the context is done or the writer marked the log
	// ended (Writer.End) and everything was read.
	Follow bool
	// Tail is how many of the last lines to show before following: -1
	// shows all, 0 none (so the zero value shows no history).
	Tail int
	// Since and Until keep records stamped in [Since, Until); zero means
	// unbounded. Following stops at the first record at or after Until.
	Since, Until time.Time
	// Timestamps prefixes each line with its RFC3339Nano time and a space.
	Timestamps bool
	// Streams keeps only these streams ("stdout", "stderr"); empty: all.
	Streams []string
	// PollInterval is how often Follow looks for new data when no change
	// notification came (on Linux inotify wakes it at once). Default 100ms.
	PollInterval time.Duration
}

// record is one parsed line of a log file.
type record struct {
	ts     time.Time
	rawTS  string
	stream string
	full   bool
	text   []byte
}

func parseRecord(line []byte) (record, bool) {
	f := bytes.SplitN(line, []byte{' '}, 4)
	if len(f) < 3 || len(f[2]) != 1 || (f[2][0] != 'F' && f[2][0] != 'P') {
		return record{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, string(f[0]))
	if err != nil {
		return record{}, false
	}
	r := record{ts: ts, rawTS: string(f[0]), stream: string(f[1]), full: f[2][0] == 'F'}
	if len(f) == 4 {
		r.text = f[3]
	}
	return r, true
}

// Read writes the log at path (and its rotated predecessors, oldest first)
// to w: the original text, one line per F record, P pieces joined. A
// missing log is an error wrapping fs.ErrNotExist unless following, which
// waits for it to appear.
func Read(ctx context.Context, path string, opts ReadOptions, w io.Writer) error {
	if opts.PollInterval <= 0 {
		opts.PollInterval = 100 * time.Millisecond
	}
	rd := &reader{opts: opts, w: w, startOfLine: map[string]bool{}}
	if opts.Tail >= 0 {
		rd.tail = &tailBuffer{max: opts.Tail, partial: map[string][]record{}}
	}
	older := rotatedFiles(path)
	for _, p := range older {
		if err := rd.readFile(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	cur, err := os.Open(path)
	if err != nil && !(errors.Is(err, os.ErrNotExist) && (opts.Follow || len(older) > 0)) {
		return fmt.Errorf("read log: %w", err)
	}
	lr := &lineReader{f: cur}
	defer func() {
		if lr.f != nil {
			lr.f.Close()
		}
	}()
	if cur != nil {
		if err := rd.drain(lr); err != nil {
			return err
		}
	}
	if rd.tail != nil {
		if err := rd.tail.flush(rd.emit); err != nil {
			return err
		}
		rd.tail = nil
	}
	if !opts.Follow || rd.done {
		return nil
	}
	return rd.follow(ctx, path, lr)
}

// rotatedFiles lists path.N ... path.1, oldest first.
func rotatedFiles(path string) []string {
	matches, _ := filepath.Glob(path + ".*")
	type numbered struct {
		n    int
		path string
	}
	var files []numbered
	for _, m := range matches {
		if n, err := strconv.Atoi(strings.TrimPrefix(m, path+".")); err == nil && n > 0 {
			files = append(files, numbered{n, m})
		}
	}
	slices.SortFunc(files, func(a, b numbered) int { return b.n - a.n })
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.path
	}
	return out
}

type reader struct {
	opts        ReadOptions
	w           io.Writer
	tail        *tailBuffer     // non-nil while collecting the last Tail lines
	startOfLine map[string]bool // per stream: next text starts a line (false after a P)
	done        bool            // a record at/after Until was seen
}

func (rd *reader) readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return rd.drain(&lineReader{f: f})
}

// drain handles every complete line lr has until EOF.
func (rd *reader) drain(lr *lineReader) error {
	for !rd.done {
		line, err := lr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		if err := rd.handle(line); err != nil {
			return err
		}
	}
	return nil
}

func (rd *reader) handle(line []byte) error {
	r, ok := parseRecord(line)
	if !ok {
		return nil
	}
	if len(rd.opts.Streams) > 0 && !slices.Contains(rd.opts.Streams, r.stream) {
		return nil
	}
	if !rd.opts.Since.IsZero() && r.ts.Before(rd.opts.Since) {
		return nil
	}
	if !rd.opts.Until.IsZero() && !r.ts.Before(rd.opts.Until) {
		rd.done = true
		return nil
	}
	if rd.tail != nil {
		rd.tail.add(r)
		return nil
	}
	return rd.emit(r)
}

// emit writes one record's text.
func (rd *reader) emit(r record) error {
	start, seen := rd.startOfLine[r.stream]
	var b []byte
	if rd.opts.Timestamps && (start || !seen) {
		b = append(b, r.rawTS...)
		b = append(b, ' ')
	}
	b = append(b, r.text...)
	if r.full {
		b = append(b, '\n')
	}
	rd.startOfLine[r.stream] = r.full
	_, err := rd.w.Write(b)
	return err
}

// follow keeps reading the live file, and when it is rotated away, finishes
// it, reads any file rotated in between, and continues with the new one.
func (rd *reader) follow(ctx context.Context, path string, lr *lineReader) error {
	tick := time.NewTicker(rd.opts.PollInterval)
	defer tick.Stop()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var changed <-chan struct{}
	if dw := watchDir(wctx, path); dw != nil {
		changed = dw.ch
	}
	for {
		if lr.f != nil {
			if err := rd.drain(lr); err != nil || rd.done {
				return err
			}
		}
		next, err := os.Open(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			// Between two renames of a rotation, or not written yet.
		case err != nil:
			return fmt.Errorf("follow log: %w", err)
		case lr.f != nil && sameFile(lr.f, next):
			next.Close()
			if ended(path) {
				// The mark is made after the last record: what is
				// left is read now, and nothing comes after it.
				return rd.drain(lr)
			}
		default:
			if lr.f != nil {
				if err := rd.drain(lr); err != nil || rd.done {
					next.Close()
					return err
				}
				if err := rd.readSkipped(path, lr.f, next); err != nil || rd.done {
					next.Close()
					return err
				}
				lr.f.Close()
			}
			*lr = lineReader{f: next}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}

// readSkipped reads the files rotated between old (now path.k, or gone)
// and the new live file next: path.k-1 ... path.1, stopping at next
// should it have been rotated too in the meantime (it is read after this,
// from its start). Files are told apart by identity, not by name, from one
// consistent view of them: the writer may rotate again while this runs,
// and a file read by its old name would then be skipped or read twice.
func (rd *reader) readSkipped(path string, old, next *os.File) error {
	files := openRotated(path) // oldest first
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	// When old is no longer kept, every file that is kept is newer.
	start := 0
	for i, f := range files {
		if sameFile(old, f) {
			start = i + 1
			break
		}
	}
	for _, f := range files[start:] {
		if sameFile(f, next) {
			return nil
		}
		if err := rd.drain(&lineReader{f: f}); err != nil || rd.done {
			return err
		}
	}
	return nil
}

// openRotated opens path.N ... path.1, oldest first, as one view: it
// retries until no rotation happened while it opened them (or gives its
// last try, after many: rotations that fast lose lines anyway, because
// the oldest files are deleted).
func openRotated(path string) []*os.File {
	var files []*os.File
	for attempt := 0; attempt < 20; attempt++ {
		for _, f := range files {
			f.Close()
		}
		files = files[:0]
		names := rotatedFiles(path)
		for _, n := range names {
			if f, err := os.Open(n); err == nil {
				files = append(files, f)
			}
		}
		if len(files) == len(names) && stillNamed(path, names, files) {
			return files
		}
	}
	return files
}

// stillNamed reports whether names are still exactly path's rotated files
// and name the files opened from them.
func stillNamed(path string, names []string, files []*os.File) bool {
	if !slices.Equal(names, rotatedFiles(path)) {
		return false
	}
	for i, n := range names {
		fi, err := os.Stat(n)
		if err != nil {
			return false
		}
		if gi, err := files[i].Stat(); err != nil || !os.SameFile(fi, gi) {
			return false
		}
	}
	return true
}

func sameFile(a, b *os.File) bool {
	ai, err1 := a.Stat()
	bi, err2 := b.Stat()
	return err1 == nil && err2 == nil && os.SameFile(ai, bi)
}

// lineReader returns complete lines of a file that may still be growing;
// a trailing partial line waits for the rest.
type lineReader struct {
	f   *os.File
	buf []byte
	off int
}

func (lr *lineReader) next() ([]byte, error) {
	for {
		if i := bytes.IndexByte(lr.buf[lr.off:], '\n'); i >= 0 {
			line := lr.buf[lr.off : lr.off+i]
			lr.off += i + 1
			return line, nil
		}
		lr.buf = append(lr.buf[:0], lr.buf[lr.off:]...)
		lr.off = 0
		if len(lr.buf) > 4*MaxLine+1024 {
			lr.buf = lr.buf[:0] // not a record: drop it
		}
		chunk := slices.Grow(lr.buf, 64<<10)
		n, err := lr.f.Read(chunk[len(lr.buf):cap(chunk)])
		lr.buf = chunk[:len(lr.buf)+n]
		if n == 0 {
			if err == nil {
				err = io.EOF
			}
			return nil, err
		}
	}
}

// tailBuffer keeps the last max lines; a line is the run of P records of
// one stream ended by an F record.
type tailBuffer struct {
	max     int
	lines   [][]record          // ring of the last max lines
	next    int                 // where the next line goes once the ring is full
	partial map[string][]record // per stream: P records waiting for their F
}

func (t *tailBuffer) add(r record) {
	r.text = bytes.Clone(r.text) // the line reader reuses its buffer
	line := append(t.partial[r.stream], r)
	if !r.full {
		t.partial[r.stream] = line
		return
	}
	delete(t.partial, r.stream)
	t.push(line)
}

func (t *tailBuffer) push(line []record) {
	if t.max == 0 {
		return
	}
	if len(t.lines) < t.max {
		t.lines = append(t.lines, line)
		return
	}
	t.lines[t.next] = line
	t.next = (t.next + 1) % t.max
}

// flush emits the kept lines, then the unterminated ones (oldest first).
func (t *tailBuffer) flush(emit func(record) error) error {
	var rest [][]record
	for _, l := range t.partial {
		rest = append(rest, l)
	}
	slices.SortFunc(rest, func(a, b []record) int { return a[0].ts.Compare(b[0].ts) })
	for _, l := range rest {
		t.push(l)
	}
	for i := range t.lines {
		for _, r := range t.lines[(t.next+i)%len(t.lines)] {
			if err := emit(r); err != nil {
				return err
			}
		}
	}
	return nil
}
