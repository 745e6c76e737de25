package shim

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-platform/cube/internal/logfile"
)

// TestFollowEndsWhenContainerEnds: a follower of a container's log that
// started before the container did returns by itself, with every line,
// once the container ended for good; while a container will run again,
// its follower goes on.
func TestFollowEndsWhenContainerEnds(t *testing.T) {
	cfg := testConfig(t, RestartNever, shell("c", "for i in $(seq 1 500); do echo line$i; done; exit 3"))
	cfg.AwaitStart = true
	c := launch(t, cfg)
	var got bytes.Buffer
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(testCtx(t), 30*time.Second)
	defer cancel()
	go func() {
		done <- logfile.Read(ctx, filepath.Join(cfg.LogDir, "c.log"), logfile.ReadOptions{Follow: true, Tail: -1}, &got)
	}()
	if err := c.Start(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("the follower ran until its deadline; want it to end with the container")
	}
	var want strings.Builder
	for i := 1; i <= 500; i++ {
		fmt.Fprintf(&want, "line%d\n", i)
	}
	if got.String() != want.String() {
		t.Errorf("followed %d bytes; want the 500 lines (%d bytes)", got.Len(), want.Len())
	}
	// The exit is published after the mark: it is final by now.
	st := waitState(t, c, "Failed", func(s State) bool { return s.Phase == PhaseFailed })
	if st.Containers[0].ExitCode != 3 {
		t.Errorf("exit code %d; want 3", st.Containers[0].ExitCode)
	}

	// Positive control: under restart always the follower does not end.
	cfg2 := testConfig(t, RestartAlways, shell("c", "echo run; exit 0"))
	c2 := launch(t, cfg2)
	waitState(t, c2, "a restart", func(s State) bool { return s.Containers[0].RestartCount >= 1 })
	ctx2, cancel2 := context.WithTimeout(testCtx(t), 500*time.Millisecond)
	defer cancel2()
	var got2 bytes.Buffer
	if err := logfile.Read(ctx2, filepath.Join(cfg2.LogDir, "c.log"), logfile.ReadOptions{Follow: true, Tail: -1}, &got2); err != nil {
		t.Fatal(err)
	}
	if ctx2.Err() == nil {
		t.Error("the follower of a container that restarts for ever ended by itself")
	}
}
