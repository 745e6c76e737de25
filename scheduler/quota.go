package scheduler

import (
	"errors"
	"fmt"
)

// ErrQuotaExceeded is the class of CheckQuota's errors (errors.Is); the API
// answers it with 429.
var ErrQuotaExceeded = errors.New("quota exceeded")

// Quota bounds what one tenant may hold in one band. A limit of 0 means no
// limit and a negative limit allows nothing (as in Nomad).
type Quota struct {
	Tenant      string `json:"tenant"`
	Band        Band   `json:"band"`
	MilliCPU    int64  `json:"milliCPU,omitempty"`
	MemoryBytes int64  `json:"memoryBytes,omitempty"`
	Instances   int64  `json:"instances,omitempty"`
}

// Usage is what a tenant holds in a band now (admitted instances).
type Usage struct {
	MilliCPU    int64 `json:"milliCPU"`
	MemoryBytes int64 `json:"memoryBytes"`
	Instances   int64 `json:"instances"`
}

// QuotaError says which limit a request would cross. It matches
// ErrQuotaExceeded with errors.Is.
type QuotaError struct {
	Tenant string
	Band   Band
	// Resource is "cpu", "memory" or "instances".
	Resource string
	// Limit, Used and Requested are in millicores, bytes or instances.
	Limit, Used, Requested int64
}

func (e *QuotaError) Error() string {
	var limit, used, req string
	switch e.Resource {
	case "cpu":
		limit, used, req = milliText(e.Limit), milliText(e.Used), milliText(e.Requested)
	case "memory":
		limit, used, req = bytesText(e.Limit), bytesText(e.Used), bytesText(e.Requested)
	default:
		limit, used, req = fmt.Sprint(e.Limit), fmt.Sprint(e.Used), fmt.Sprint(e.Requested)
	}
	if e.Limit < 0 {
		return fmt.Sprintf("quota exceeded: %s quota for tenant %s band %s allows none (ask an operator to raise it)",
			e.Resource, e.Tenant, e.Band)
	}
	return fmt.Sprintf("quota exceeded: %s quota for tenant %s band %s: limit %s, in use %s, requested %s (free some or ask an operator to raise it)",
		e.Resource, e.Tenant, e.Band, limit, used, req)
}

func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

// CheckQuota returns nil if usage plus one instance of request stays within
// quota, else a *QuotaError for the first limit crossed (cpu, memory, then
// instances).
func CheckQuota(quota Quota, usage Usage, request Resources) error {
	check := func(resource string, limit, used, req int64) error {
		if limit == 0 || (limit > 0 && used+req <= limit) {
			return nil
		}
		return &QuotaError{Tenant: quota.Tenant, Band: quota.Band, Resource: resource,
			Limit: limit, Used: used, Requested: req}
	}
	if err := check("cpu", quota.MilliCPU, usage.MilliCPU, request.MilliCPU); err != nil {
		return err
	}
	if err := check("memory", quota.MemoryBytes, usage.MemoryBytes, request.MemoryBytes); err != nil {
		return err
	}
	return check("instances", quota.Instances, usage.Instances, 1)
}

// milliText renders millicores as cores, e.g. "2.5 cpu" or "250m cpu".
func milliText(m int64) string {
	if m%1000 == 0 {
		return fmt.Sprintf("%d cpu", m/1000)
	}
	if m >= 1000 || m <= -1000 {
		return fmt.Sprintf("%.2f cpu", float64(m)/1000)
	}
	return fmt.Sprintf("%dm cpu", m)
}
