package v1

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// FieldError is a validation failure of one field; the API answers it with
// 422 and the field's path.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Defaults applied to containers that do not say.
const (
	DefaultCPU    = "1"
	DefaultMemory = "256Mi"
	// MinMemory keeps a container able to start at all.
	MinMemory = 4 << 20
)

// Bounds of an instance's sandbox (spec.pids, spec.disk).
const (
	DefaultPids = 1024
	// MinPids leaves room for each container's init and a shell; MaxPids
	// keeps one instance far from a node's pid space (32768 by default).
	MinPids     = 16
	MaxPids     = 16384
	DefaultDisk = "1Gi"
	// MinDisk is what ext4 needs for itself; MaxDisk bounds what one
	// instance may claim of a node's disk.
	MinDisk = 16 << 20
	MaxDisk = 256 << 30
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
var envRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)
var labelKeyRE = regexp.MustCompile(`^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)

// ValidateName checks an object name (DNS label: what a hostname allows).
func ValidateName(field, name string) error {
	if !nameRE.MatchString(name) {
		return &FieldError{field, fmt.Sprintf("%q is not a valid name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit", name)}
	}
	return nil
}

// SetDefaults fills what the user may omit. It is idempotent.
func (in *Instance) SetDefaults() {
	in.APIVersion, in.Kind = Version, "Instance"
	if in.Spec.RestartPolicy == "" {
		in.Spec.RestartPolicy = RestartAlways
	}
	if in.Spec.Priority == "" {
		in.Spec.Priority = PriorityProduction
	}
	if in.Spec.Pids == 0 {
		in.Spec.Pids = DefaultPids
	}
	if in.Spec.Disk == "" {
		in.Spec.Disk = DefaultDisk
	}
	for i := range in.Spec.Containers {
		c := &in.Spec.Containers[i]
		if c.Name == "" && len(in.Spec.Containers) == 1 {
			c.Name = "main"
		}
		if c.Resources.CPU == "" {
			c.Resources.CPU = DefaultCPU
		}
		if c.Resources.Memory == "" {
			c.Resources.Memory = DefaultMemory
		}
		for j := range c.Ports {
			if c.Ports[j].Protocol == "" {
				c.Ports[j].Protocol = "TCP"
			}
			c.Ports[j].Protocol = strings.ToUpper(c.Ports[j].Protocol)
		}
	}
}

// Validate checks a defaulted instance spec; the first problem is returned
// as a *FieldError.
func (in *Instance) Validate() error {
	if err := in.validateBounds(); err != nil {
		return err
	}
	if err := ValidateName("metadata.name", in.Metadata.Name); err != nil {
		return err
	}
	for k, v := range in.Metadata.Labels {
		if !labelKeyRE.MatchString(k) {
			return &FieldError{"metadata.labels", fmt.Sprintf("label key %q is invalid: use letters, digits, '-', '_', '.' with an optional DNS prefix", k)}
		}
		if len(v) > 63 {
			return &FieldError{"metadata.labels." + k, "label value is longer than 63 characters"}
		}
	}
	switch in.Spec.RestartPolicy {
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		return &FieldError{"spec.restartPolicy", fmt.Sprintf("%q is not one of Always, OnFailure, Never", in.Spec.RestartPolicy)}
	}
	if in.Spec.MaxRestarts < 0 {
		return &FieldError{"spec.maxRestarts", fmt.Sprintf("%d is negative", in.Spec.MaxRestarts)}
	}
	if in.Spec.MaxRestarts > 0 && in.Spec.RestartPolicy != RestartOnFailure {
		return &FieldError{"spec.maxRestarts", fmt.Sprintf("applies only with restartPolicy OnFailure, not %s", in.Spec.RestartPolicy)}
	}
	switch in.Spec.Priority {
	case PrioritySystem, PriorityProduction, PriorityBatch, PriorityBestEffort:
	default:
		return &FieldError{"spec.priority", fmt.Sprintf("%q is not one of system, production, batch, best-effort", in.Spec.Priority)}
	}
	if in.Spec.Runtime != "" && !slices.Contains(Runtimes, in.Spec.Runtime) {
		return &FieldError{"spec.runtime", fmt.Sprintf("%q is not one of %s", in.Spec.Runtime, strings.Join(Runtimes, ", "))}
	}
	for i, tol := range in.Spec.Tolerations {
		f := fmt.Sprintf("spec.tolerations[%d]", i)
		if tol.Operator != "" && tol.Operator != "Equal" && tol.Operator != "Exists" {
			return &FieldError{f + ".operator", fmt.Sprintf("%q is not Equal or Exists", tol.Operator)}
		}
		if tol.Key == "" && tol.Operator != "Exists" {
			return &FieldError{f + ".key", "a toleration without a key must use operator Exists"}
		}
	}
	if in.Spec.MaxPerNode < 0 {
		return &FieldError{"spec.maxPerNode", "must not be negative"}
	}
	if in.Spec.MaxPerNode > 0 && in.Spec.Service == "" {
		return &FieldError{"spec.maxPerNode", "needs spec.service to name the replicas it bounds"}
	}
	if in.Spec.Pids < MinPids || in.Spec.Pids > MaxPids {
		return &FieldError{"spec.pids", fmt.Sprintf("%d is out of bounds: want %d to %d processes", in.Spec.Pids, MinPids, MaxPids)}
	}
	if disk, err := ParseMemory(in.Spec.Disk); err != nil {
		return &FieldError{"spec.disk", strings.Replace(err.Error(), "memory", "disk", 1)}
	} else if disk < MinDisk || disk > MaxDisk {
		return &FieldError{"spec.disk", fmt.Sprintf("%s is out of bounds: want 16Mi to 256Gi", in.Spec.Disk)}
	}
	if len(in.Spec.Containers) == 0 {
		return &FieldError{"spec.containers", "at least one container is required"}
	}
	names := map[string]bool{}
	hostPorts := map[string]bool{}
	containerPorts := map[string]bool{}
	for i, c := range in.Spec.Containers {
		f := fmt.Sprintf("spec.containers[%d]", i)
		if err := ValidateName(f+".name", c.Name); err != nil {
			return err
		}
		if names[c.Name] {
			return &FieldError{f + ".name", fmt.Sprintf("container name %q is used twice", c.Name)}
		}
		names[c.Name] = true
		if strings.TrimSpace(c.Image) == "" {
			return &FieldError{f + ".image", "an image is required"}
		}
		cpu, err := ParseCPU(c.Resources.CPU)
		if err != nil {
			return &FieldError{f + ".resources.cpu", err.Error()}
		}
		if cpu < 10 {
			return &FieldError{f + ".resources.cpu", "must be at least 10m (0.01 cores)"}
		}
		mem, err := ParseMemory(c.Resources.Memory)
		if err != nil {
			return &FieldError{f + ".resources.memory", err.Error()}
		}
		if mem < MinMemory {
			return &FieldError{f + ".resources.memory", fmt.Sprintf("%s is below the minimum of 4Mi", c.Resources.Memory)}
		}
		for j, e := range c.Env {
			if !envRE.MatchString(e.Name) {
				return &FieldError{fmt.Sprintf("%s.env[%d].name", f, j), fmt.Sprintf("%q is not a valid environment variable name", e.Name)}
			}
		}
		for j, p := range c.Ports {
			pf := fmt.Sprintf("%s.ports[%d]", f, j)
			if p.ContainerPort < 1 || p.ContainerPort > 65535 {
				return &FieldError{pf + ".containerPort", fmt.Sprintf("%d is not a port (1-65535)", p.ContainerPort)}
			}
			if p.HostPort < 0 || p.HostPort > 65535 {
				return &FieldError{pf + ".hostPort", fmt.Sprintf("%d is not a port (1-65535, or 0 to not publish)", p.HostPort)}
			}
			if p.Protocol != "TCP" && p.Protocol != "UDP" {
				return &FieldError{pf + ".protocol", fmt.Sprintf("%q is not TCP or UDP", p.Protocol)}
			}
			// All containers share one network namespace: a port can be
			// bound by only one of them.
			ck := fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol)
			if containerPorts[ck] {
				return &FieldError{pf + ".containerPort", fmt.Sprintf("port %s is declared twice in this instance", ck)}
			}
			containerPorts[ck] = true
			if p.HostPort != 0 {
				hk := fmt.Sprintf("%d/%s", p.HostPort, p.Protocol)
				if hostPorts[hk] {
					return &FieldError{pf + ".hostPort", fmt.Sprintf("host port %s is published twice", hk)}
				}
				hostPorts[hk] = true
			}
		}
	}
	return nil
}

// Requests sums the instance's cpu (millicores) and memory (bytes). The
// spec must be valid.
func (in *Instance) Requests() (milliCPU, memory int64) {
	for _, c := range in.Spec.Containers {
		cpu, _ := ParseCPU(c.Resources.CPU)
		mem, _ := ParseMemory(c.Resources.Memory)
		milliCPU += cpu
		memory += mem
	}
	return milliCPU, memory
}

// Validate checks a tenant request.
func (t *TenantRequest) Validate() error {
	if err := ValidateName("name", t.Name); err != nil {
		return err
	}
	if t.Weight < 0 {
		return &FieldError{"weight", "must not be negative"}
	}
	if t.ImageStorage != "" {
		if n, err := ParseMemory(t.ImageStorage); err != nil || n <= 0 {
			return &FieldError{"imageStorage", fmt.Sprintf("%q is not a positive size such as 20Gi", t.ImageStorage)}
		}
	}
	for band, q := range t.Quotas {
		f := "quotas." + band
		switch band {
		case PrioritySystem, PriorityProduction, PriorityBatch, PriorityBestEffort:
		default:
			return &FieldError{f, fmt.Sprintf("%q is not one of system, production, batch, best-effort", band)}
		}
		if q.CPU != "" {
			if _, err := ParseCPU(q.CPU); err != nil {
				return &FieldError{f + ".cpu", err.Error()}
			}
		}
		if q.Memory != "" {
			if _, err := ParseMemory(q.Memory); err != nil {
				return &FieldError{f + ".memory", err.Error()}
			}
		}
		if q.Instances < 0 {
			return &FieldError{f + ".instances", "must not be negative"}
		}
	}
	if _, err := ParseTTL(t.TokenTTL); err != nil {
		return &FieldError{"tokenTTL", err.(*FieldError).Reason}
	}
	if err := validateRuntimes("allowRuntimes", t.AllowRuntimes); err != nil {
		return err
	}
	return validateGrants(t.AllowPriorities, t.AllowTolerations, t.MaxInstances)
}
