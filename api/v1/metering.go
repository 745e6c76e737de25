package v1

import "time"

// RunningTime is how long the instance has run up to now, as metering
// bills it: from runningAt to finishedAt (or now), less the time spent
// suspended (suspendedTotal, and now-suspendedAt while suspended). An
// instance that never ran has run 0. A suspendedTotal that does not parse
// counts as none.
func (s *InstanceStatus) RunningTime(now time.Time) time.Duration {
	if s.RunningAt == nil {
		return 0
	}
	end := now
	if s.FinishedAt != nil && s.FinishedAt.Before(end) {
		end = *s.FinishedAt
	}
	if s.SuspendedAt != nil && s.SuspendedAt.Before(end) {
		end = *s.SuspendedAt
	}
	d := end.Sub(*s.RunningAt)
	if s.SuspendedTotal != "" {
		if total, err := time.ParseDuration(s.SuspendedTotal); err == nil && total > 0 {
			d -= total
		}
	}
	return max(d, 0)
}
