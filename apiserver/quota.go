package apiserver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/scheduler"
	"github.com/cube-platform/cube/store"
)

// admit stores a new instance, refusing it at once (429) when it would
// take its tenant over the quota of its band. Usage counts every admitted
// instance of the band that has not finished. The write is guarded by the
// revision of the tenant's instances, so concurrent admissions are
// serialized by etcd, not by this process.
func (s *Server) admit(ctx context.Context, in *v1.Instance) error {
	insts := s.store.Instances()
	tenant := in.Metadata.Tenant
	key := insts.Key(tenant, in.Metadata.Name)
	t, err := s.store.GetTenant(ctx, tenant)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	q, limited := t.Quotas[in.Spec.Priority]
	if !limited {
		return insts.Create(ctx, key, in)
	}
	band, _ := scheduler.ParseBand(in.Spec.Priority)
	quota := scheduler.Quota{Tenant: tenant, Band: band, Instances: q.Instances}
	quota.MilliCPU, _ = parseOr0(v1.ParseCPU, q.CPU)
	quota.MemoryBytes, _ = parseOr0(v1.ParseMemory, q.Memory)
	cpu, mem := in.Requests()
	req := scheduler.Resources{MilliCPU: cpu, MemoryBytes: mem}
	for attempt := 0; attempt < 20; attempt++ {
		items, rev, err := insts.ListAt(ctx, insts.Prefix(tenant), 0)
		if err != nil {
			return err
		}
		var use scheduler.Usage
		for _, x := range items {
			if x.Spec.Priority != in.Spec.Priority || x.Status.Phase.Terminal() {
				continue
			}
			c, m := x.Requests()
			use.MilliCPU += c
			use.MemoryBytes += m
			use.Instances++
		}
		if err := scheduler.CheckQuota(quota, use, req); err != nil {
			return fmt.Errorf("%w: %v", errdefs.ErrQuotaExceeded, quotaMessage(err))
		}
		err = insts.CreateGuarded(ctx, key, in, insts.Prefix(tenant), rev)
		if !errors.Is(err, errdefs.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: too many concurrent creations for tenant %s; retry", errdefs.ErrConflict, tenant)
}

func parseOr0(parse func(string) (int64, error), s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	return parse(s)
}

// quotaMessage drops the scheduler's own "quota exceeded: " prefix: the
// error class already says it.
func quotaMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "quota exceeded: ")
}

// putTenant applies a tenant request's weight and quotas.
func (s *Server) putTenant(ctx context.Context, req v1.TenantRequest) error {
	return s.store.PutTenant(ctx, store.Tenant{Name: req.Name, Weight: req.Weight, Quotas: req.Quotas, ImageStorage: req.ImageStorage, Created: s.cfg.Now().UTC()})
}
