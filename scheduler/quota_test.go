package scheduler_test

import (
	"errors"
	"testing"

	"github.com/cube-platform/cube/scheduler"
)

func TestCheckQuota(t *testing.T) {
	q := scheduler.Quota{Tenant: "acme", Band: scheduler.BandProduction, MilliCPU: 4000, MemoryBytes: 8 * gib, Instances: 3}
	small := scheduler.Resources{MilliCPU: 500, MemoryBytes: gib}
	tests := []struct {
		name    string
		quota   scheduler.Quota
		usage   scheduler.Usage
		request scheduler.Resources
		want    string // "" means admitted
	}{
		{"within every limit", q, scheduler.Usage{MilliCPU: 1000, MemoryBytes: 2 * gib, Instances: 1}, small, ""},
		{"exactly at the limit", q, scheduler.Usage{MilliCPU: 3500, MemoryBytes: 7 * gib, Instances: 2}, small, ""},
		{"cpu", q, scheduler.Usage{MilliCPU: 3750, Instances: 1}, small,
			"quota exceeded: cpu quota for tenant acme band production: limit 4 cpu, in use 3.75 cpu, requested 500m cpu (free some or ask an operator to raise it)"},
		{"memory", q, scheduler.Usage{MemoryBytes: 7*gib + gib/2, Instances: 1}, small,
			"quota exceeded: memory quota for tenant acme band production: limit 8GiB, in use 7.5GiB, requested 1GiB (free some or ask an operator to raise it)"},
		{"instances", q, scheduler.Usage{Instances: 3}, small,
			"quota exceeded: instances quota for tenant acme band production: limit 3, in use 3, requested 1 (free some or ask an operator to raise it)"},
		{"zero means unlimited", scheduler.Quota{Tenant: "acme"}, scheduler.Usage{MilliCPU: 1 << 40, Instances: 1 << 40}, small, ""},
		{"negative allows none", scheduler.Quota{Tenant: "acme", Band: scheduler.BandSystem, Instances: -1}, scheduler.Usage{}, small,
			"quota exceeded: instances quota for tenant acme band system allows none (ask an operator to raise it)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := scheduler.CheckQuota(tt.quota, tt.usage, tt.request)
			if tt.want == "" {
				if err != nil {
					t.Errorf("CheckQuota = %v; want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("CheckQuota = %v;\nwant %s", err, tt.want)
			}
			if !errors.Is(err, scheduler.ErrQuotaExceeded) {
				t.Errorf("errors.Is(%v, ErrQuotaExceeded) = false; want true", err)
			}
			var qe *scheduler.QuotaError
			if !errors.As(err, &qe) || qe.Tenant != "acme" {
				t.Errorf("errors.As(%v, *QuotaError) = %v; want tenant acme", err, qe)
			}
		})
	}
}
