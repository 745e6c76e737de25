package controller

import (
	"fmt"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
)

// InstanceEvents derives the events of one change of an instance: prev is
// nil for a creation, cur nil for a removal. It is pure, so that replaying
// a change (a new leader resuming from its last recorded revision) yields
// the same events.
func InstanceEvents(prev, cur *v1.Instance, at time.Time) []v1.Event {
	in := cur
	if in == nil {
		in = prev
	}
	if in == nil {
		return nil
	}
	var out []v1.Event
	add := func(typ, reason, msg string) *v1.Event {
		out = append(out, v1.Event{
			APIVersion: v1.Version, Kind: "Event",
			Metadata: v1.ObjectMeta{Tenant: in.Metadata.Tenant},
			Instance: in.Metadata.Name, InstanceUID: in.Metadata.UID,
			Type: typ, Reason: reason, Message: msg, Time: at, Node: in.Status.Node,
		})
		return &out[len(out)-1]
	}
	switch {
	case prev == nil:
		add(v1.EventNormal, "Created", "created with "+images(in))
		if in.Status.Phase != v1.PhasePending {
			// Created already bound (a restore): the rest follows.
			prev = &v1.Instance{}
		} else {
			return out
		}
	case cur == nil:
		add(v1.EventNormal, "Removed", "removed")
		return out
	}
	ps, cs := prev.Status, cur.Status
	if prev.Metadata.DeletionTimestamp == nil && cur.Metadata.DeletionTimestamp != nil {
		add(v1.EventNormal, "Stopping", "removal requested; the node stops the instance")
	}
	if ps.Preemption == nil && cs.Preemption != nil {
		add(v1.EventWarning, "Preempting", cs.Preemption.Message)
	}
	if cs.VMBootWarning != "" && cs.VMBootWarning != ps.VMBootWarning {
		add(v1.EventWarning, "TemplateFallback", cs.VMBootWarning)
	}
	if !prev.Spec.Suspend && cur.Spec.Suspend {
		add(v1.EventNormal, "Suspending", "suspend requested; node "+orNone(cs.Node)+" saves the VM to disk")
	}
	if prev.Spec.Suspend && !cur.Spec.Suspend {
		add(v1.EventNormal, "Resuming", "resume requested; node "+orNone(cs.Node)+" restores the VM")
	}
	// The phase reached, unless final, comes before what the containers
	// did in it (a change can hold a start and the first exit).
	phaseChanged := ps.Phase != cs.Phase || ps.Reason != cs.Reason || ps.Message != cs.Message
	if phaseChanged {
		switch cs.Phase {
		case v1.PhasePending:
			if cs.Reason != "" && cs.Message != ps.Message {
				add(v1.EventWarning, "FailedScheduling", cs.Message)
			}
		case v1.PhaseScheduled:
			if ps.Phase != cs.Phase {
				add(v1.EventNormal, "Scheduled", "bound to node "+cs.Node)
			}
		case v1.PhaseCreating:
			switch {
			case cs.Reason == "ShimLost" && ps.Reason != "ShimLost":
				add(v1.EventWarning, "ShimLost", cs.Message)
			case ps.Phase != cs.Phase && cs.Reason != "ShimLost":
				add(v1.EventNormal, "Creating", "node "+cs.Node+" prepares the image, the network and the shim")
			}
		case v1.PhaseRunning:
			switch {
			case ps.Phase == v1.PhaseSuspended:
				add(v1.EventNormal, "Resumed", fmt.Sprintf("running again on node %s with IP %s", cs.Node, orNone(cs.IP)))
			case ps.Phase != cs.Phase:
				add(v1.EventNormal, "Started", fmt.Sprintf("running on node %s with IP %s", cs.Node, orNone(cs.IP)))
			case cs.Reason == v1.ReasonSuspendFailed:
				add(v1.EventWarning, "SuspendFailed", cs.Message)
			}
		case v1.PhaseSuspended:
			switch {
			case ps.Phase != cs.Phase:
				add(v1.EventNormal, "Suspended", "the VM is saved on node "+cs.Node+"; it uses no CPU or memory until resumed")
			case cs.Reason == v1.ReasonResumeFailed:
				add(v1.EventWarning, "ResumeFailed", cs.Message)
			}
		}
	}
	for _, c := range cs.Containers {
		old, _ := containerNamed(ps.Containers, c.Name)
		// Exits the store never showed on their own (a node reports what
		// it sees, and an exit, a restart and the next exit can be one
		// change) are told from lastExit, in the order they happened.
		seen := lastRun(old)
		exited := func(ex *v1.ContainerExit) {
			if ex == nil || seen != nil && seen.FinishedAt.Equal(ex.FinishedAt) {
				return
			}
			typ := v1.EventNormal
			if ex.ExitCode != 0 || ex.OOMKilled {
				typ = v1.EventWarning
			}
			containerEvent(add(typ, "Exited", "container "+c.Name+" "+exitText(ex)), c, ex)
		}
		if c.RestartCount > old.RestartCount {
			exited(c.LastExit)
			containerEvent(add(v1.EventNormal, "Restarted", fmt.Sprintf("container %s started again (restart %d)", c.Name, c.RestartCount)), c, c.LastExit)
		}
		if c.State == v1.ContainerTerminated {
			exited(lastRun(c))
		}
	}
	if phaseChanged {
		switch cs.Phase {
		case v1.PhaseSucceeded:
			if ps.Phase != cs.Phase {
				add(v1.EventNormal, "Completed", "every container exited with code 0")
			}
		case v1.PhaseFailed:
			if ps.Phase != cs.Phase {
				msg := cs.Reason
				if cs.Message != "" {
					msg += ": " + cs.Message
				}
				e := add(v1.EventWarning, "Failed", msg)
				if c, ok := firstFailed(cs.Containers); ok {
					containerEvent(e, c, lastRun(c))
				}
			}
		}
	}
	return out
}

// containerEvent fills the container fields of e: c's name and restarts,
// and the end of its last run, if any.
func containerEvent(e *v1.Event, c v1.ContainerStatus, ex *v1.ContainerExit) {
	e.Container, e.RestartCount = c.Name, c.RestartCount
	if ex != nil {
		code := ex.ExitCode
		e.ExitCode, e.Signal, e.OOMKilled = &code, ex.Signal, ex.OOMKilled
	}
}

// lastRun is how c's latest finished run ended: the current one if it
// ended, else the one before a restart; nil if none ended.
func lastRun(c v1.ContainerStatus) *v1.ContainerExit {
	if c.State == v1.ContainerTerminated && c.Reason == "CrashLoopBackOff" && c.LastExit != nil {
		return c.LastExit // the run that just ended, with why it did
	}
	if c.State == v1.ContainerTerminated {
		ex := &v1.ContainerExit{ExitCode: c.ExitCode, Signal: c.Signal, OOMKilled: c.OOMKilled, Reason: c.Reason}
		if c.FinishedAt != nil {
			ex.FinishedAt = *c.FinishedAt
		}
		return ex
	}
	return c.LastExit
}

func exitText(ex *v1.ContainerExit) string {
	var b strings.Builder
	fmt.Fprintf(&b, "exited with code %d", ex.ExitCode)
	if ex.Signal != 0 {
		fmt.Fprintf(&b, " (signal %d)", ex.Signal)
	}
	if ex.OOMKilled {
		b.WriteString(", killed for running out of memory")
	}
	if ex.Reason != "" && ex.Reason != "Completed" && ex.Reason != "Error" && ex.Reason != "OOMKilled" {
		b.WriteString(": " + ex.Reason)
	}
	return b.String()
}

func containerNamed(cs []v1.ContainerStatus, name string) (v1.ContainerStatus, bool) {
	for _, c := range cs {
		if c.Name == name {
			return c, true
		}
	}
	return v1.ContainerStatus{}, false
}

func firstFailed(cs []v1.ContainerStatus) (v1.ContainerStatus, bool) {
	for _, c := range cs {
		if c.ExitCode != 0 || c.OOMKilled {
			return c, true
		}
	}
	return v1.ContainerStatus{}, false
}

func images(in *v1.Instance) string {
	var names []string
	for _, c := range in.Spec.Containers {
		names = append(names, c.Image)
	}
	if len(names) == 1 {
		return "image " + names[0]
	}
	return "images " + strings.Join(names, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
