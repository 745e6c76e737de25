// Package jail starts a VMM process confined the way Firecracker's jailer
// confines firecracker: its own unprivileged uid and gid, no capabilities
// in any set and no_new_privs, its own mount namespace whose root is a
// small read-only tmpfs holding only the files bound into it (the VMM
// binary and its libraries, kernel, initrd, a few /dev nodes), its own
// empty network, IPC and UTS namespaces, rlimits, only the file
// descriptors it was handed, an empty environment, its own cgroup, and
// PR_SET_PDEATHSIG=SIGKILL so it dies with its parent.
//
// Go cannot run code between fork and exec, so the confinement is done by
// a helper: Start re-executes the current binary (/proc/self/exe) with
// argv[0] HelperName, already inside fresh namespaces (clone flags), and
// this package's init function recognizes that argv[0], sets the jail up
// on one locked OS thread and execs the VMM. Any binary that imports this
// package (the shim, test binaries) can therefore start jailed VMMs; it
// must not change os.Args[0] handling or run other code first.
//
// The package must not depend on the control plane, the store, the node
// agent or a particular VMM.
package jail
