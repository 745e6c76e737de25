package v1

import (
	"fmt"
	"path"
	"reflect"
	"strings"
)

// Bounds on one instance. They keep a spec small enough to store, watch
// and hand to a node many times over, whatever a tenant sends.
const (
	MaxContainers = 16
	// MaxEnv is per container; MaxEnvBytes bounds the names and values of
	// one container together, MaxEnvValue one value.
	MaxEnv      = 256
	MaxEnvValue = 32 << 10
	MaxEnvBytes = 128 << 10
	// MaxArgs bounds command and args of one container together, and
	// MaxArgBytes their total length.
	MaxArgs     = 1024
	MaxArgBytes = 128 << 10
	MaxLabels   = 64
	// MaxPorts is per instance, over all its containers.
	MaxPorts        = 64
	MaxTolerations  = 32
	MaxNodeSelector = 32
	// MaxString bounds any other string field.
	MaxString = 4096
)

// validateBounds refuses NUL bytes anywhere and counts and sizes over the
// bounds, naming the field. It runs before every other check, so nothing
// later walks an unbounded spec.
func (in *Instance) validateBounds() error {
	if f := findNUL(reflect.ValueOf(in.Metadata), "metadata"); f != "" {
		return &FieldError{f, "contains a NUL byte, which no name, value or path may hold"}
	}
	if f := findNUL(reflect.ValueOf(in.Spec), "spec"); f != "" {
		return &FieldError{f, "contains a NUL byte, which no name, value or path may hold"}
	}
	if n := len(in.Metadata.Labels); n > MaxLabels {
		return &FieldError{"metadata.labels", fmt.Sprintf("%d labels; at most %d are allowed", n, MaxLabels)}
	}
	if n := len(in.Spec.Tolerations); n > MaxTolerations {
		return &FieldError{"spec.tolerations", fmt.Sprintf("%d tolerations; at most %d are allowed", n, MaxTolerations)}
	}
	if n := len(in.Spec.NodeSelector); n > MaxNodeSelector {
		return &FieldError{"spec.nodeSelector", fmt.Sprintf("%d terms; at most %d are allowed", n, MaxNodeSelector)}
	}
	if n := len(in.Spec.Containers); n > MaxContainers {
		return &FieldError{"spec.containers", fmt.Sprintf("%d containers; at most %d are allowed in one instance", n, MaxContainers)}
	}
	if len(in.Spec.Service) > 253 {
		return &FieldError{"spec.service", "is longer than 253 characters"}
	}
	ports := 0
	for i, c := range in.Spec.Containers {
		f := fmt.Sprintf("spec.containers[%d]", i)
		if len(c.Image) > MaxString {
			return &FieldError{f + ".image", fmt.Sprintf("is longer than %d characters", MaxString)}
		}
		if n := len(c.Env); n > MaxEnv {
			return &FieldError{f + ".env", fmt.Sprintf("%d environment variables; at most %d are allowed per container", n, MaxEnv)}
		}
		size := 0
		for j, e := range c.Env {
			if len(e.Name) > 256 {
				return &FieldError{fmt.Sprintf("%s.env[%d].name", f, j), "is longer than 256 characters"}
			}
			if len(e.Value) > MaxEnvValue {
				return &FieldError{fmt.Sprintf("%s.env[%d].value", f, j), fmt.Sprintf("is %d bytes; at most %d KiB are allowed", len(e.Value), MaxEnvValue>>10)}
			}
			size += len(e.Name) + len(e.Value)
		}
		if size > MaxEnvBytes {
			return &FieldError{f + ".env", fmt.Sprintf("names and values total %d bytes; at most %d KiB are allowed per container", size, MaxEnvBytes>>10)}
		}
		if n := len(c.Command) + len(c.Args); n > MaxArgs {
			return &FieldError{f + ".args", fmt.Sprintf("command and args have %d items; at most %d are allowed", n, MaxArgs)}
		}
		size = 0
		for _, a := range append(c.Command[:len(c.Command):len(c.Command)], c.Args...) {
			size += len(a)
		}
		if size > MaxArgBytes {
			return &FieldError{f + ".args", fmt.Sprintf("command and args total %d bytes; at most %d KiB are allowed", size, MaxArgBytes>>10)}
		}
		if err := validateWorkingDir(f+".workingDir", c.WorkingDir); err != nil {
			return err
		}
		ports += len(c.Ports)
		if ports > MaxPorts {
			return &FieldError{f + ".ports", fmt.Sprintf("the instance declares more than %d ports", MaxPorts)}
		}
	}
	return nil
}

// validateWorkingDir: empty (the image's), or an absolute clean path that
// is not /proc or below it (a working directory there reaches the host's
// view of the container's process).
func validateWorkingDir(field, dir string) error {
	switch {
	case dir == "":
		return nil
	case len(dir) > MaxString:
		return &FieldError{field, fmt.Sprintf("is longer than %d characters", MaxString)}
	case !path.IsAbs(dir):
		return &FieldError{field, fmt.Sprintf("%q is not an absolute path: start it with /", dir)}
	case path.Clean(dir) != dir:
		return &FieldError{field, fmt.Sprintf("%q is not a clean path: use %q", dir, path.Clean(dir))}
	case dir == "/proc" || strings.HasPrefix(dir, "/proc/"):
		return &FieldError{field, fmt.Sprintf("%q is under /proc, which no container may work in", dir)}
	}
	return nil
}

// findNUL returns the JSON path of the first string (or map key) under v
// that holds a NUL byte, or "".
func findNUL(v reflect.Value, at string) string {
	switch v.Kind() {
	case reflect.String:
		if strings.IndexByte(v.String(), 0) >= 0 {
			return at
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return findNUL(v.Elem(), at)
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if p := findNUL(v.Field(i), at+"."+name); p != "" {
				return p
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if p := findNUL(v.Index(i), fmt.Sprintf("%s[%d]", at, i)); p != "" {
				return p
			}
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			k := iter.Key()
			if k.Kind() == reflect.String && strings.IndexByte(k.String(), 0) >= 0 {
				return at
			}
			if p := findNUL(iter.Value(), at+"."+fmt.Sprint(k.Interface())); p != "" {
				return p
			}
		}
	}
	return ""
}

// Validate bounds an exec request as a container's command is bounded.
func (e *ExecRequest) Validate() error {
	if f := findNUL(reflect.ValueOf(*e), "exec"); f != "" {
		return &FieldError{strings.TrimPrefix(f, "exec."), "contains a NUL byte, which no name, value or path may hold"}
	}
	if len(e.Command) == 0 {
		return &FieldError{"command", "a command is required"}
	}
	size := 0
	for _, a := range e.Command {
		size += len(a)
	}
	if len(e.Command) > MaxArgs || size > MaxArgBytes {
		return &FieldError{"command", fmt.Sprintf("%d items, %d bytes; at most %d items and %d KiB are allowed", len(e.Command), size, MaxArgs, MaxArgBytes>>10)}
	}
	size = 0
	for _, kv := range e.Env {
		size += len(kv)
	}
	if len(e.Env) > MaxEnv || size > MaxEnvBytes {
		return &FieldError{"env", fmt.Sprintf("%d variables, %d bytes; at most %d and %d KiB are allowed", len(e.Env), size, MaxEnv, MaxEnvBytes>>10)}
	}
	return nil
}
