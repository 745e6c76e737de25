package v1

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Tenant is a tenant as the admin (or the tenant itself) reads it.
type Tenant struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Metadata   ObjectMeta   `json:"metadata"`
	Spec       TenantSpec   `json:"spec"`
	Status     TenantStatus `json:"status"`
}

// TenantSpec is what the admin set for a tenant.
type TenantSpec struct {
	// Weight scales the tenant's fair share.
	Weight float64 `json:"weight,omitempty"`
	// Quotas per priority band; a band without an entry is unlimited.
	Quotas map[string]Quota `json:"quotas,omitempty"`
	// AllowPriorities are the bands above production granted to it.
	AllowPriorities []string `json:"allowPriorities,omitempty"`
	// AllowTolerations are the taint keys it may tolerate ("*": any).
	AllowTolerations []string `json:"allowTolerations,omitempty"`
	// AllowRuntimes are the runtimes granted beyond microvm ("runc").
	AllowRuntimes []string `json:"allowRuntimes,omitempty"`
	// MaxInstances bounds its stored instances (0: the server default).
	MaxInstances int `json:"maxInstances,omitempty"`
	// ImageStorage caps its images' bytes (empty: the default, 10Gi).
	ImageStorage string `json:"imageStorage,omitempty"`
}

// TenantStatus is what the server counts for a tenant.
type TenantStatus struct {
	// Instances is how many instances it has stored (every phase).
	Instances int `json:"instances"`
	// MaxInstances is the bound in force (its own or the default).
	MaxInstances int `json:"maxInstances"`
	// Runtimes are those its instances may use (microvm and the grants;
	// every one for the admin tenant).
	Runtimes []string `json:"runtimes"`
}

// TenantUpdate changes only the fields it sets (PATCH /v1/tenants/{name}).
type TenantUpdate struct {
	Weight *float64 `json:"weight,omitempty"`
	// Quotas replace the quota of each band named; other bands keep theirs.
	Quotas map[string]Quota `json:"quotas,omitempty"`
	// RemoveQuotas makes the bands named unlimited again.
	RemoveQuotas []string `json:"removeQuotas,omitempty"`
	// AllowPriorities and AllowTolerations add grants; Deny… remove them.
	AllowPriorities  []string `json:"allowPriorities,omitempty"`
	DenyPriorities   []string `json:"denyPriorities,omitempty"`
	AllowTolerations []string `json:"allowTolerations,omitempty"`
	DenyTolerations  []string `json:"denyTolerations,omitempty"`
	AllowRuntimes    []string `json:"allowRuntimes,omitempty"`
	DenyRuntimes     []string `json:"denyRuntimes,omitempty"`
	MaxInstances     *int     `json:"maxInstances,omitempty"`
	// ImageStorage replaces the image storage quota ("20Gi").
	ImageStorage *string `json:"imageStorage,omitempty"`
}

// Token scopes.
const (
	// ScopeAdmin manages tenants and tokens (admin tenant only).
	ScopeAdmin = "admin"
	// ScopeTenant acts on its tenant's objects.
	ScopeTenant = "tenant"
	// ScopeReadOnly may only read (GET) its tenant's objects.
	ScopeReadOnly = "read-only"
)

// DefaultTokenTTL is the lifetime of a token that does not say.
const DefaultTokenTTL = 365 * 24 * time.Hour

// TokenRequest mints a token (POST /v1/tokens).
type TokenRequest struct {
	// Tenant defaults to the caller's; only admin tokens may name another.
	Tenant string `json:"tenant,omitempty"`
	// Scope is admin, tenant (default) or read-only.
	Scope string `json:"scope,omitempty"`
	// TTL is a duration ("720h"); "0" never expires; empty is 8760h.
	TTL string `json:"ttl,omitempty"`
}

// Token describes a token without its secret; Metadata.Name is its ID.
type Token struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	// Scope is admin, tenant, read-only, or node for a node agent's token.
	Scope string `json:"scope"`
	// Node is the node of a node token.
	Node string `json:"node,omitempty"`
	// Expires is when it stops working; absent: never.
	Expires *time.Time `json:"expires,omitempty"`
	// Token is the secret, in the answer to its creation only.
	Token string `json:"token,omitempty"`
}

func (t *Tenant) Meta() *ObjectMeta { return &t.Metadata }
func (t *Token) Meta() *ObjectMeta  { return &t.Metadata }

// ParseTTL reads a token lifetime: "" is DefaultTokenTTL, "0" is never
// (returned as 0).
func ParseTTL(s string) (time.Duration, error) {
	switch s {
	case "":
		return DefaultTokenTTL, nil
	case "0":
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, &FieldError{"ttl", `"` + s + `" is not a duration: use e.g. 720h, or 0 for a token that never expires`}
	}
	if d < time.Minute {
		return 0, &FieldError{"ttl", s + " is shorter than a minute"}
	}
	return d, nil
}

// validateRuntimes checks runtime grants (field names the list).
func validateRuntimes(field string, rts []string) error {
	for i, r := range rts {
		if !slices.Contains(Runtimes, r) {
			return &FieldError{fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%q is not one of %s", r, strings.Join(Runtimes, ", "))}
		}
	}
	return nil
}

func validateGrants(prios, tols []string, maxInstances int) error {
	for i, p := range prios {
		switch p {
		case PrioritySystem, PriorityProduction, PriorityBatch, PriorityBestEffort:
		default:
			return &FieldError{fmt.Sprintf("allowPriorities[%d]", i), fmt.Sprintf("%q is not one of system, production, batch, best-effort", p)}
		}
	}
	for i, k := range tols {
		if k != "*" && !labelKeyRE.MatchString(k) {
			return &FieldError{fmt.Sprintf("allowTolerations[%d]", i), fmt.Sprintf("%q is not a taint key (or * for every key)", k)}
		}
	}
	if maxInstances < 0 {
		return &FieldError{"maxInstances", "must not be negative"}
	}
	return nil
}

// Validate checks a tenant update.
func (u *TenantUpdate) Validate() error {
	if u.Weight != nil && *u.Weight < 0 {
		return &FieldError{"weight", "must not be negative"}
	}
	if err := (&TenantRequest{Name: "x", Quotas: u.Quotas}).Validate(); err != nil {
		return err
	}
	for _, b := range u.RemoveQuotas {
		if err := (&TenantRequest{Name: "x", Quotas: map[string]Quota{b: {}}}).Validate(); err != nil {
			return err
		}
	}
	max := 0
	if u.MaxInstances != nil {
		max = *u.MaxInstances
	}
	if err := validateGrants(u.AllowPriorities, u.AllowTolerations, max); err != nil {
		return err
	}
	if u.ImageStorage != nil {
		if err := (&TenantRequest{Name: "x", ImageStorage: *u.ImageStorage}).Validate(); err != nil {
			return err
		}
	}
	if err := validateRuntimes("allowRuntimes", u.AllowRuntimes); err != nil {
		return err
	}
	if err := validateRuntimes("denyRuntimes", u.DenyRuntimes); err != nil {
		return err
	}
	return validateGrants(u.DenyPriorities, u.DenyTolerations, 0)
}
