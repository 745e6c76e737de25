package logfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock hands out times one millisecond apart, starting at base.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func newTestWriter(t *testing.T, opts Options) (*Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.log")
	if opts.Now == nil {
		opts.Now = (&fakeClock{t: base}).Now
	}
	w, err := NewWriter(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, path
}

func readAll(t *testing.T, path string, opts ReadOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := Read(context.Background(), path, opts, &b); err != nil {
		t.Fatalf("Read(%+v): %v", opts, err)
	}
	return b.String()
}

func TestWriterFormat(t *testing.T) {
	w, path := newTestWriter(t, Options{})
	out, errs := w.Stream(Stdout), w.Stream(Stderr)
	fmt.Fprint(out, "hello\nwor")
	fmt.Fprint(errs, "oops\n")
	fmt.Fprint(out, "ld\n\nend")
	out.Close()
	b, _ := os.ReadFile(path)
	want := "2026-01-02T03:04:05.001Z stdout F hello\n" +
		"2026-01-02T03:04:05.002Z stderr F oops\n" +
		"2026-01-02T03:04:05.003Z stdout F world\n" +
		"2026-01-02T03:04:05.004Z stdout F \n" +
		"2026-01-02T03:04:05.005Z stdout P end\n"
	if string(b) != want {
		t.Errorf("file =\n%s\nwant\n%s", b, want)
	}
	if got := readAll(t, path, ReadOptions{Tail: -1}); got != "hello\noops\nworld\n\nend" {
		t.Errorf("Read = %q", got)
	}
}

func TestLongLinesArePartial(t *testing.T) {
	w, path := newTestWriter(t, Options{})
	long := strings.Repeat("x", 2*MaxLine+10)
	fmt.Fprint(w.Stream(Stdout), long+"\nshort\n")
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	tags := []string{}
	for _, l := range lines {
		tags = append(tags, strings.Fields(l)[2])
	}
	if strings.Join(tags, "") != "PPFF" {
		t.Errorf("tags = %v; want P P F F", tags)
	}
	if got := readAll(t, path, ReadOptions{Tail: -1}); got != long+"\nshort\n" {
		t.Errorf("Read did not join the pieces (len %d)", len(got))
	}
	if got := readAll(t, path, ReadOptions{Tail: 2, Timestamps: true}); got != "2026-01-02T03:04:05.001Z "+long+"\n2026-01-02T03:04:05.004Z short\n" {
		t.Errorf("Read(tail 2, timestamps) = %.60q...", got)
	}
}

func TestRotation(t *testing.T) {
	w, path := newTestWriter(t, Options{MaxBytes: 210, MaxFiles: 3})
	out := w.Stream(Stdout)
	for i := range 40 {
		fmt.Fprintf(out, "line %02d\n", i) // 42 bytes a record: 5 per file
	}
	for _, p := range []string{path, path + ".1", path + ".2"} {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() > 210 {
			t.Errorf("%s: %v, size %d; want at most 210 bytes", p, err, fi.Size())
		}
	}
	if _, err := os.Stat(path + ".3"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s.3 exists; want at most 3 files", path)
	}
	got := readAll(t, path, ReadOptions{Tail: -1})
	var want strings.Builder
	for i := 25; i < 40; i++ {
		fmt.Fprintf(&want, "line %02d\n", i)
	}
	if got != want.String() {
		t.Errorf("Read = %q; want lines 25-39 in order", got)
	}
}

func TestReadFilters(t *testing.T) {
	w, path := newTestWriter(t, Options{MaxBytes: 120})
	out, errs := w.Stream(Stdout), w.Stream(Stderr)
	for i := range 6 { // record i is stamped base + (i+1)ms
		s := out
		if i%2 == 1 {
			s = errs
		}
		fmt.Fprintf(s, "l%d\n", i)
	}
	ms := func(n int) time.Time { return base.Add(time.Duration(n) * time.Millisecond) }
	tests := []struct {
		name string
		opts ReadOptions
		want string
	}{
		{"all", ReadOptions{Tail: -1}, "l0\nl1\nl2\nl3\nl4\nl5\n"},
		{"none", ReadOptions{}, ""},
		{"tail", ReadOptions{Tail: 2}, "l4\nl5\n"},
		{"tail more than there is", ReadOptions{Tail: 100}, "l0\nl1\nl2\nl3\nl4\nl5\n"},
		{"since", ReadOptions{Tail: -1, Since: ms(3)}, "l2\nl3\nl4\nl5\n"},
		{"until", ReadOptions{Tail: -1, Until: ms(3)}, "l0\nl1\n"},
		{"since until tail", ReadOptions{Tail: 1, Since: ms(2), Until: ms(5)}, "l3\n"},
		{"stderr", ReadOptions{Tail: -1, Streams: []string{Stderr}}, "l1\nl3\nl5\n"},
		{"timestamps", ReadOptions{Tail: 1, Timestamps: true}, "2026-01-02T03:04:05.006Z l5\n"},
	}
	for _, tt := range tests {
		if got := readAll(t, path, tt.opts); got != tt.want {
			t.Errorf("%s: Read(%+v) = %q; want %q", tt.name, tt.opts, got, tt.want)
		}
	}
}

func TestReadMissing(t *testing.T) {
	err := Read(context.Background(), filepath.Join(t.TempDir(), "nope.log"), ReadOptions{Tail: -1}, &bytes.Buffer{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read(missing) = %v; want fs.ErrNotExist", err)
	}
}

// syncBuffer collects follow output while the test polls it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, b *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.String() != want {
		if time.Now().After(deadline) {
			t.Fatalf("followed output = %q; want %q", b.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFollowAcrossRotations(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	ctx, cancel := context.WithCancel(context.Background())
	var got syncBuffer
	done := make(chan error, 1)
	// Follow starts before the file exists, and polls slowly so that some
	// rotations happen twice between two polls.
	go func() {
		done <- Read(ctx, path, ReadOptions{Follow: true, Tail: -1, PollInterval: 50 * time.Millisecond}, &got)
	}()
	time.Sleep(100 * time.Millisecond)
	w, err := NewWriter(path, Options{MaxBytes: 100, MaxFiles: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	out := w.Stream(Stdout)
	var want strings.Builder
	for i := range 30 {
		line := fmt.Sprintf("line %02d", i)
		fmt.Fprintln(out, line)
		want.WriteString(line + "\n")
		if i%7 == 0 {
			waitFor(t, &got, want.String())
		}
	}
	waitFor(t, &got, want.String())
	fmt.Fprint(out, "part")
	out.Close()
	waitFor(t, &got, want.String()+"part")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Read(follow) = %v; want nil after cancel", err)
	}
}

func TestFollowStopsAtUntil(t *testing.T) {
	clock := &fakeClock{t: base}
	w, path := newTestWriter(t, Options{Now: clock.Now})
	out := w.Stream(Stdout)
	fmt.Fprintln(out, "a")
	var got syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Read(context.Background(), path, ReadOptions{Follow: true, Tail: -1, Until: base.Add(3 * time.Millisecond), PollInterval: 10 * time.Millisecond}, &got)
	}()
	fmt.Fprintln(out, "b")
	fmt.Fprintln(out, "c") // stamped at Until: ends the follow
	select {
	case err := <-done:
		if err != nil || got.String() != "a\nb\n" {
			t.Errorf("Read = %q, %v; want a, b", got.String(), err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not stop at Until")
	}
}

func TestConcurrentStreams(t *testing.T) {
	w, path := newTestWriter(t, Options{MaxBytes: 4096, MaxFiles: 100, Now: time.Now})
	var wg sync.WaitGroup
	for _, name := range []string{Stdout, Stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := w.Stream(name)
			for i := range 500 {
				fmt.Fprintf(s, "%s %d\n", name, i)
			}
		}()
	}
	wg.Wait()
	for _, name := range []string{Stdout, Stderr} {
		got := readAll(t, path, ReadOptions{Tail: -1, Streams: []string{name}})
		lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
		if len(lines) != 500 || lines[0] != name+" 0" || lines[499] != name+" 499" {
			t.Errorf("%s: %d lines, first %q last %q; want 500 in order", name, len(lines), lines[0], lines[len(lines)-1])
		}
	}
}

// TestFollowSingleFile: with MaxFiles 1 a rotation replaces the file; the
// follower must move to the new one.
func TestFollowSingleFile(t *testing.T) {
	w, path := newTestWriter(t, Options{MaxBytes: 100, MaxFiles: 1})
	ctx, cancel := context.WithCancel(context.Background())
	var got syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Read(ctx, path, ReadOptions{Follow: true, Tail: -1, PollInterval: 10 * time.Millisecond}, &got)
	}()
	out := w.Stream(Stdout)
	var want strings.Builder
	for i := range 8 {
		fmt.Fprintf(out, "line %d\n", i)
		fmt.Fprintf(&want, "line %d\n", i)
		waitFor(t, &got, want.String())
	}
	cancel()
	<-done
	if _, err := os.Stat(path + ".1"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("MaxFiles 1 kept %s.1", path)
	}
}
