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
	// A clock from the RTC alone is behind by up to a second; a clone's
	// is its template's, minutes or days behind, until Setup sets it.
	t.Run("cold", func(t *testing.T) { testGuestClock(t, vmtest.Options(t)) })
	t.Run("template", func(t *testing.T) { testGuestClock(t, templateOptions(t)) })
}

// clockBound is how far a guest's clock may be from the host's, measured
// over a round trip to its agent (the bound for a clone).
const clockBound = 10 * time.Millisecond

// guestClockOffset measures sb's guest clock against the host's over a
// round trip to its agent: the guest's time minus the trip's midpoint,
// and half the trip (the measure's own uncertainty).
func guestClockOffset(t *testing.T, ctx context.Context, sb sandbox.Sandbox) (time.Duration, time.Duration) {
	t.Helper()
	vs := sb.(*vmSandbox)
	vs.mu.Lock()
	agent := vs.agent
	vs.mu.Unlock()
	best, bestHalf := time.Duration(0), time.Hour
	for range 5 { // the shortest trip measures best
		t1 := time.Now()
		info, err := agent.Hello(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t2 := time.Now()
		if half := t2.Sub(t1) / 2; half < bestHalf {
			best, bestHalf = info.Time.Sub(t1.Add(half)), half
		}
	}
	return best, bestHalf
}

func testGuestClock(t *testing.T, opts sandbox.VMOptions) {
	// Output reaches the host in well under this.
	const bound = 100 * time.Millisecond
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
	off, half := guestClockOffset(t, ctx, sb)
	if off < -clockBound-half || off > clockBound+half {
		t.Errorf("the guest's clock is %v off the host's (measured over a round trip of %v); want within %v", off, 2*half, clockBound)
	}
	t.Logf("guest clock offset %v ± %v (vm from %s)", off, half, bootFrom(t, spec))
}
