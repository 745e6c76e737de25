package agent

import (
	"bytes"
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOutputBackPressure: a process that writes faster than anyone reads
// is held back by its pipe once the agent holds maxBuffered bytes; the
// agent's memory stays bounded and nothing is dropped.
func TestOutputBackPressure(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pipeSize, err := unix.FcntlInt(w.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	const total, chunk = 4 << 20, 4096
	var written atomic.Int64
	go func() {
		defer w.Close()
		b := make([]byte, chunk)
		for i := 0; i < total/chunk; i++ {
			for j := range b {
				b[j] = byte(i + j)
			}
			n, err := w.Write(b)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	o := newOutput()
	go o.pump(r)
	// Wait for the agent's buffer to fill.
	deadline := time.Now().Add(10 * time.Second)
	for {
		o.mu.Lock()
		n := len(o.data)
		o.mu.Unlock()
		if n >= maxBuffered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("buffer holds %d bytes after 10s; want %d", n, maxBuffered)
		}
		time.Sleep(time.Millisecond)
	}
	bound := int64(maxBuffered + pipeSize + chunk)
	if got := written.Load(); got > bound {
		t.Errorf("writer got %d bytes out with nobody reading; want at most %d (buffer + pipe)", got, bound)
	}
	o.mu.Lock()
	if len(o.data) > maxBuffered {
		t.Errorf("agent holds %d bytes; want at most %d", len(o.data), maxBuffered)
	}
	o.mu.Unlock()
	// Drain: every byte arrives, in order.
	var got bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		b, eof, err := o.read(ctx, uint64(got.Len()), 64<<10)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		got.Write(b)
		if eof {
			break
		}
	}
	if got.Len() != total {
		t.Fatalf("read %d bytes; want %d", got.Len(), total)
	}
	data := got.Bytes()
	for i := 0; i < total/chunk; i++ {
		for j := 0; j < chunk; j += 511 {
			if data[i*chunk+j] != byte(i+j) {
				t.Fatalf("byte %d = %d; want %d", i*chunk+j, data[i*chunk+j], byte(i+j))
			}
		}
	}
}

// TestOutputReread: an answer the host lost (a read it timed out on) is
// given again at the same offset; acknowledged bytes are gone, and an
// offset outside what the agent holds is refused.
func TestOutputReread(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	o := newOutput()
	go o.pump(r)
	w.Write([]byte("hello"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, _, err := o.read(ctx, 0, 64)
	if err != nil || len(first) == 0 {
		t.Fatalf("read(0) = %q, %v", first, err)
	}
	again, _, err := o.read(ctx, 0, 64)
	if err != nil || string(again) != string(first) {
		t.Fatalf("read(0) again = %q, %v; want %q", again, err, first)
	}
	if _, _, err := o.read(ctx, uint64(len(first))+1, 64); err == nil {
		t.Errorf("read past the held bytes succeeded; want an error")
	}
	w.Write([]byte(" world"))
	w.Close()
	var got []byte = append([]byte(nil), first...)
	for {
		b, eof, err := o.read(ctx, uint64(len(got)), 64)
		if err != nil {
			t.Fatalf("read(%d): %v", len(got), err)
		}
		got = append(got, b...)
		if eof {
			break
		}
	}
	if string(got) != "hello world" {
		t.Errorf("stream = %q; want %q", got, "hello world")
	}
	if _, _, err := o.read(ctx, 0, 64); err == nil {
		t.Errorf("read(0) after offset 11 was acknowledged succeeded; want an error")
	}
}

// TestOutputAbandoned: once a stream's run is replaced, nobody reads it
// again: the agent drains and drops it, so its writer is not blocked
// forever and the agent holds nothing.
func TestOutputAbandoned(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	o := newOutput()
	pumped := make(chan struct{})
	go func() {
		o.pump(r)
		close(pumped)
	}()
	wrote := make(chan error, 1)
	go func() {
		_, err := w.Write(make([]byte, 4*maxBuffered))
		w.Close()
		wrote <- err
	}()
	o.abandon()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("write: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the writer of an abandoned stream is still blocked after 10s")
	}
	<-pumped
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.data) > 32<<10 {
		t.Errorf("an abandoned stream holds %d bytes", len(o.data))
	}
}
