package logfile

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestFollowEndsAtEnd: a follower started before the writer wrote
// anything returns by itself once the writer ended the log, with every
// line (across rotations too), and no sooner.
func TestFollowEndsAtEnd(t *testing.T) {
	for _, maxBytes := range []int64{0} {
		t.Run(fmt.Sprintf("maxBytes=%d", maxBytes), func(t *testing.T) {
			w, path := newTestWriter(t, Options{MaxBytes: maxBytes, MaxFiles: 100})
			var buf syncBuffer
			done := make(chan error, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			go func() { done <- Read(ctx, path, ReadOptions{Follow: true, Tail: -1}, &buf) }()
			out := w.Stream(Stdout)
			var want strings.Builder
			for i := 1; i <= 2000; i++ {
				line := fmt.Sprintf("line%d\n", i)
				want.WriteString(line)
				if _, err := out.Write([]byte(line)); err != nil {
					t.Fatal(err)
				}
			}
			out.Close()
			waitForLen(t, &buf, want.Len()) // everything is read...
			select {
			case err := <-done: // ...and yet the follower goes on
				t.Fatalf("follow returned before the end mark: %v", err)
			default:
			}
			if err := w.End(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if ctx.Err() != nil {
				t.Fatal("follow ended by its context, not by the end mark")
			}
			if got := buf.String(); got != want.String() {
				t.Errorf("followed %d bytes; want all 2000 lines (%d bytes)", len(got), want.Len())
			}
		})
	}
}

// TestResumeClearsEnd: after Resume, a follower keeps following.
func TestResumeClearsEnd(t *testing.T) {
	w, path := newTestWriter(t, Options{})
	if err := w.End(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Read(context.Background(), path, ReadOptions{Follow: true, Tail: -1}, &buf); err != nil {
		t.Fatalf("follow of an ended log: %v", err)
	}
	if err := w.Resume(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := Read(ctx, path, ReadOptions{Follow: true, Tail: -1}, &buf); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() == nil {
		t.Error("follow of a resumed log returned before its context ended")
	}
}

// waitForLen waits until b holds n bytes, without printing them all.
func waitForLen(t *testing.T, b *syncBuffer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(b.String()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("followed %d bytes; want %d", len(b.String()), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
