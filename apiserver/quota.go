package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/scheduler"
	"github.com/cube-platform/cube/store"
)

// admit stores a new instance, refusing it at once (429) when it would
// take its tenant over its object bound (every stored instance counts,
// Pending and finished ones included) or over the quota of its band
// (every admitted instance of the band that has not finished). The write
// is guarded by the revision of the tenant's instances, so concurrent
// admissions are serialized by etcd, not by this process.
func (s *Server) admit(ctx context.Context, t store.Tenant, in *v1.Instance) error {
	insts := s.store.Instances()
	tenant := in.Metadata.Tenant
	key := insts.Key(tenant, in.Metadata.Name)
	q, limited := t.Quotas[in.Spec.Priority]
	// The admin tenant has no object bound unless the admin set one:
	// benches and the platform's own work run there.
	maxObjects := s.maxInstances(t)
	if tenant == AdminTenant && t.MaxInstances == 0 {
		maxObjects = 0
	}
	if !limited && maxObjects == 0 {
		return insts.Create(ctx, key, in)
	}
	band, _ := scheduler.ParseBand(in.Spec.Priority)
	quota := scheduler.Quota{Tenant: tenant, Band: band, Instances: q.Instances}
	quota.MilliCPU, _ = parseOr0(v1.ParseCPU, q.CPU)
	quota.MemoryBytes, _ = parseOr0(v1.ParseMemory, q.Memory)
	cpu, mem := in.Requests()
	req := scheduler.Resources{MilliCPU: cpu, MemoryBytes: mem}
	for attempt := 0; attempt < 20; attempt++ {
		var rev int64
		if limited {
			items, lrev, err := insts.ListAt(ctx, insts.Prefix(tenant), 0)
			if err != nil {
				return err
			}
			rev = lrev
			if err := checkObjects(tenant, len(items), maxObjects); err != nil {
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
		} else {
			n, crev, err := s.store.CountInstances(ctx, tenant)
			if err != nil {
				return err
			}
			rev = crev
			if err := checkObjects(tenant, int(n), maxObjects); err != nil {
				return err
			}
		}
		err := insts.CreateGuarded(ctx, key, in, insts.Prefix(tenant), rev)
		if !errors.Is(err, errdefs.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: too many concurrent creations for tenant %s; retry", errdefs.ErrConflict, tenant)
}

func checkObjects(tenant string, n, max int) error {
	if max > 0 && n >= max {
		return fmt.Errorf("%w: tenant %s has %d instances, its bound (Pending and finished ones count): remove some with `cube rm`, or ask the admin for `cube tenant update %s --max-instances N`", errdefs.ErrQuotaExceeded, tenant, n, tenant)
	}
	return nil
}

// tenantRecord reads the caller's tenant; a tenant with a token but no
// record (minted before tenants were stored) has defaults and no grants.
func (s *Server) tenantRecord(r *http.Request, name string) (store.Tenant, error) {
	t, err := s.store.GetTenant(r.Context(), name)
	if errors.Is(err, errdefs.ErrNotFound) {
		return store.Tenant{Name: name}, nil
	}
	return t, err
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
