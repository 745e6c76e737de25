package microvm

import (
	"context"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

// arrivals records when each line written to it arrived.
type arrivals struct {
	mu    sync.Mutex
	tail  string      // an incomplete last line; protected by mu
	lines []string    // protected by mu
	at    []time.Time // protected by mu
}

func (a *arrivals) Write(p []byte) (int, error) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.tail + string(p)
	for {
		line, rest, ok := strings.Cut(s, "\n")
		if !ok {
			break
		}
		a.lines, a.at, s = append(a.lines, line), append(a.at, now), rest
	}
	a.tail = s
	return len(p), nil
}

func (a *arrivals) snapshot() ([]string, []time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.lines...), append([]time.Time(nil), a.at...)
}

var _ io.Writer = (*arrivals)(nil)

// TestGuestClock: a container's clock is the host's. The kernel sets it
// from the RTC at boot, to the whole second (so up to a second behind);
// Setup sets it from the host's. The container reads its clock and
// prints it (busybox adjtimex), again and again; no reading may be later
// than its line's arrival on the host (the guest ahead), and the closest
// one must be close (the guest behind, or output late by more than the
// bound).
func TestGuestClock(t *testing.T) {
	// Output reaches the host in well under 100 ms; a clock from the RTC
	// alone is behind by up to a second.
	t.Run("cold", func(t *testing.T) { testGuestClock(t, vmtest.Options(t), 100*time.Millisecond) })
	// A clone's clock is its template's, minutes or days behind, until
	// Setup sets it; the bound is 10 ms.
	t.Run("template", func(t *testing.T) { testGuestClock(t, templateOptions(t), 10*time.Millisecond) })
}

func testGuestClock(t *testing.T, opts sandbox.VMOptions, bound time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sb, spec := createShellVMWith(t, ctx, opts, "while :; do adjtimex; sleep 0.1; done")
	out := &arrivals{}
	if err := sb.Start(ctx, "app", sandbox.Stdio{Stdout: out, Stderr: out}); err != nil {
		t.Fatal(err)
	}
	// adjtimex prints a block per run, time.tv_sec then time.tv_usec.
	type sample struct {
		guest, arrived time.Time
	}
	samplesOf := func() []sample {
		lines, at := out.snapshot()
		var ss []sample
		var sec int64 = -1
		for i, l := range lines {
			f := strings.Fields(l)
			if len(f) != 2 {
				continue
			}
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				continue
			}
			switch f[0] {
			case "time.tv_sec:":
				sec = n
			case "time.tv_usec:":
				if sec >= 0 {
					ss = append(ss, sample{time.Unix(sec, n*1000), at[i]})
				}
				sec = -1
			}
		}
		return ss
	}
	const samples = 20
	sandboxtest.WaitFor(t, ctx, "20 clock readings", func() bool { return len(samplesOf()) >= samples })
	// adjtimex reads the clock, then prints it; a millisecond of slack.
	const slack = time.Millisecond
	closest := time.Hour
	for i, s := range samplesOf()[:samples] {
		lag := s.arrived.Sub(s.guest)
		if lag < -slack {
			t.Errorf("reading %d %v is %v after its line reached the host: the guest's clock is ahead", i, s.guest, -lag)
		}
		closest = min(closest, lag)
	}
	if closest > bound {
		t.Errorf("the closest reading reached the host %v after it was taken; want under %v (the guest's clock is behind)", closest, bound)
	}
	t.Logf("closest reading-to-arrival %v over %d samples (vm from %s)", closest, samples, bootFrom(t, spec))
}
