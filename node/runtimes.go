package node

import (
	"os"
	"slices"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/sandbox"
)

// Runtimes tells what the node can run instances in. The node reports
// Status with its registration, again whenever it changes (a guest kernel
// that finished building makes microvm appear), and asks VM for what a
// microvm sandbox boots with.
type Runtimes interface {
	// Status is what the node offers now.
	Status() RuntimeStatus
	// VM is what a microVM boots with; false while the node cannot run
	// VMs (no kernel yet, no QEMU).
	VM() (sandbox.VMOptions, bool)
	// Template is the ready template a microVM of spec's size, booting
	// with vm (what VM returned), clones; false: it boots cold.
	Template(spec sandbox.Spec, vm sandbox.VMOptions) (Template, bool)
}

// Template is a booted VM saved for clones (sandbox/microvm): its
// directory, and its sealed memory, which the node hands to the shim.
type Template struct {
	Dir string
	Mem *os.File
	// Warm, if set, is the socket of a warm shim (shim.Config.Warm)
	// holding a clone of this template restored and rehearsed ahead, now
	// the caller's to adopt (shim.Adopt).
	Warm string
}

// RuntimeStatus is the runtimes part of a node's status.
type RuntimeStatus struct {
	// Runtimes offered now (v1.RuntimeMicroVM, v1.RuntimeRunc).
	Runtimes []string
	// Accelerator of the node's VMs ("kvm", "tcg"; "": no VMs).
	Accelerator string
	// GuestKernel is the guest kernel's progress ("ready", "building 42%").
	GuestKernel string
	// Templates is each VM size's template and how it comes along.
	Templates []v1.TemplateStatus
}

func (s RuntimeStatus) equal(o RuntimeStatus) bool {
	return slices.Equal(s.Runtimes, o.Runtimes) && s.Accelerator == o.Accelerator && s.GuestKernel == o.GuestKernel &&
		slices.Equal(s.Templates, o.Templates)
}

// RuncOnly is the Runtimes of a node without VMs.
type RuncOnly struct{}

func (RuncOnly) Status() RuntimeStatus         { return RuntimeStatus{Runtimes: []string{v1.RuntimeRunc}} }
func (RuncOnly) VM() (sandbox.VMOptions, bool) { return sandbox.VMOptions{}, false }

func (RuncOnly) Template(sandbox.Spec, sandbox.VMOptions) (Template, bool) { return Template{}, false }

// backendOf maps an instance's runtime onto the shim's sandbox backend;
// an instance stored before runtimes existed ran runc.
func backendOf(in *v1.Instance) string {
	if in.Spec.Runtime == v1.RuntimeMicroVM {
		return sandbox.BackendMicroVM
	}
	return sandbox.BackendRunc
}
