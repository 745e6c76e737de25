// Package tap wires a VM's network card into an instance's network
// namespace the tc-redirect-tap way: a tap device next to the interface
// CNI made (eth0), and a tc ingress filter on each that redirects every
// frame to the other, so the guest owns eth0's IP and MAC and every rule
// the node applies to eth0's traffic holds for the VM exactly as for runc.
//
// It must not depend on the control plane, the store, the node agent or a
// particular VMM.
package tap
