package network

import (
	"context"
	"errors"
	"testing"
)

func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	ctx := context.Background()
	unlockA, err := k.lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Another key is independent.
	unlockB, err := k.lock(ctx, "b")
	if err != nil {
		t.Fatalf("lock(b) while a is held = %v; want nil", err)
	}
	unlockB()

	// The same key waits, and gives up with the context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := k.lock(cctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("lock(a) while held, ctx canceled = %v; want context.Canceled", err)
	}

	got := make(chan struct{})
	go func() {
		unlock, err := k.lock(ctx, "a")
		if err == nil {
			unlock()
		}
		close(got)
	}()
	unlockA()
	<-got
	if n := len(k.locks); n != 0 {
		t.Errorf("len(locks) after all released = %d; want 0", n)
	}
}
