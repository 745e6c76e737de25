package v1

import (
	"testing"
	"time"
)

func TestRunningTime(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := t0.Add(d); return &x }
	now := t0.Add(time.Hour)
	tests := []struct {
		name string
		st   InstanceStatus
		want time.Duration
	}{
		{"never ran", InstanceStatus{Phase: PhaseCreating}, 0},
		{"running", InstanceStatus{RunningAt: at(0)}, time.Hour},
		{"finished", InstanceStatus{RunningAt: at(0), FinishedAt: at(10 * time.Minute)}, 10 * time.Minute},
		{"suspended now", InstanceStatus{RunningAt: at(0), SuspendedAt: at(20 * time.Minute)}, 20 * time.Minute},
		{"resumed after 5m", InstanceStatus{RunningAt: at(0), ResumedAt: at(25 * time.Minute), SuspendedTotal: "5m0s"}, 55 * time.Minute},
		{"suspended twice", InstanceStatus{RunningAt: at(0), SuspendedAt: at(50 * time.Minute), SuspendedTotal: "5m"}, 45 * time.Minute},
		{"garbled total", InstanceStatus{RunningAt: at(0), SuspendedTotal: "soon"}, time.Hour},
	}
	for _, tt := range tests {
		if got := tt.st.RunningTime(now); got != tt.want {
			t.Errorf("%s: RunningTime = %s; want %s", tt.name, got, tt.want)
		}
	}
}
