package apiserver

import (
	"errors"
	"fmt"
	"net/http"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

// suspendInstance records the desired state spec.suspend (true: suspend,
// false: resume) of one of the caller's instances, which its node acts on;
// it answers 202 with the instance. The phase must allow it: suspend needs
// Running, resume Suspended (409 otherwise, saying why). Asking again what
// is already asked is a no-op. Only microvm instances can be suspended.
func (s *Server) suspendInstance(suspend bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := requireRole(r, store.RoleTenant); err != nil {
			writeError(w, err)
			return
		}
		in, err := s.lookupInstance(r)
		if err != nil {
			writeError(w, err)
			return
		}
		insts := s.store.Instances()
		key := insts.Key(in.Metadata.Tenant, in.Metadata.Name)
		out, err := insts.Mutate(r.Context(), key, func(cur *v1.Instance) error {
			if cur.Metadata.UID != in.Metadata.UID {
				return fmt.Errorf("%w: instance %q was replaced meanwhile; try again", errdefs.ErrConflict, cur.Metadata.Name)
			}
			if err := suspendAllowed(cur, suspend); err != nil {
				return err
			}
			if cur.Spec.Suspend == suspend {
				return errUnchanged
			}
			cur.Spec.Suspend = suspend
			// A failure of an earlier attempt is no longer news: the
			// node tries again and reports what it finds.
			if r := cur.Status.Reason; r == v1.ReasonSuspendFailed || r == v1.ReasonResumeFailed {
				cur.Status.Reason, cur.Status.Message = "", ""
			}
			return nil
		})
		switch {
		case errors.Is(err, errUnchanged):
			out = in
		case errors.Is(err, errdefs.ErrNotFound):
			err = fmt.Errorf("%w: instance %q not found (list instances with `cube ps -a`)", errdefs.ErrNotFound, in.Metadata.Name)
			fallthrough
		case err != nil:
			writeError(w, err)
			return
		default:
			verb := map[bool]string{true: "suspend", false: "resume"}[suspend]
			s.log.Info("instance "+verb+" requested", "tenant", out.Metadata.Tenant, "name", out.Metadata.Name, "node", out.Status.Node)
		}
		writeJSON(w, http.StatusAccepted, out)
	}
}

// errUnchanged ends a Mutate that has nothing to write.
var errUnchanged = errors.New("unchanged")

// suspendAllowed says whether in may be suspended (suspend) or resumed now;
// the refusal names the instance's own state and what to do.
func suspendAllowed(in *v1.Instance, suspend bool) error {
	name := in.Metadata.Name
	if in.Spec.Runtime != v1.RuntimeMicroVM {
		rt := in.Spec.Runtime
		if rt == "" {
			rt = v1.RuntimeRunc
		}
		return fieldErr(errdefs.ErrInvalid, "spec.runtime", "runtime %s cannot be suspended or resumed: only runtime microvm saves an instance's whole state (run it with --runtime microvm)", rt)
	}
	if in.Metadata.DeletionTimestamp != nil {
		return fmt.Errorf("%w: instance %q is being removed", errdefs.ErrConflict, name)
	}
	if in.Status.Preemption != nil {
		return fmt.Errorf("%w: instance %q was preempted and is stopping", errdefs.ErrConflict, name)
	}
	phase := in.Status.Phase
	switch {
	case suspend && phase == v1.PhaseRunning:
		return nil
	case suspend && phase == v1.PhaseSuspended && !in.Spec.Suspend:
		return fmt.Errorf("%w: instance %q is Suspended and being resumed; suspend it again once it is Running (`cube wait %s --for running`)", errdefs.ErrConflict, name, name)
	case suspend && phase == v1.PhaseSuspended:
		return fmt.Errorf("%w: instance %q is already Suspended; `cube resume %s` runs it again", errdefs.ErrConflict, name, name)
	case suspend:
		return fmt.Errorf("%w: instance %q is %s; only a Running instance can be suspended", errdefs.ErrConflict, name, phase)
	case phase == v1.PhaseSuspended:
		return nil
	case phase == v1.PhaseRunning && in.Spec.Suspend:
		return fmt.Errorf("%w: instance %q is Running and being suspended; resume it once it is Suspended (`cube wait %s --for suspended`)", errdefs.ErrConflict, name, name)
	default:
		return fmt.Errorf("%w: instance %q is %s; only a Suspended instance can be resumed", errdefs.ErrConflict, name, phase)
	}
}
