// Package reaper waits for a process's children: the guest agent's (the
// VM's init) and each container init's (its PID namespace's init).
//
// The container init imports it: it must depend only on the standard
// library and x/sys/unix (see guest/cinit).
package reaper

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reaper waits for children. As init (or a subreaper) it reaps every
// child, known or orphaned, with wait4(-1); otherwise only the ones it
// started, so that it never steals another part of its process's
// children (in tests the agent shares a process with the test).
type Reaper struct {
	all bool
	// mu is held across a start and its registration, and by the reap
	// loop before it looks a pid up: a child that exits at once is still
	// found.
	mu    sync.Mutex
	procs map[int]chan syscall.WaitStatus // protected by mu
	sigs  chan os.Signal
}

// New returns a reaper; with all, it reaps every child (an init's or a
// subreaper's duty) from a SIGCHLD handler it starts at once.
func New(all bool) *Reaper {
	r := &Reaper{all: all, procs: map[int]chan syscall.WaitStatus{}}
	if all {
		r.sigs = make(chan os.Signal, 16)
		signal.Notify(r.sigs, unix.SIGCHLD)
		go r.loop()
	}
	return r
}

// Start runs fn (which starts a process and returns its pid) under mu and
// returns a channel that receives the process's wait status once.
func (r *Reaper) Start(fn func() (int, error)) (int, <-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := fn()
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.procs[pid] = ch
	if !r.all {
		go func() {
			var ws syscall.WaitStatus
			for {
				_, err := syscall.Wait4(pid, &ws, 0, nil)
				if err != syscall.EINTR {
					break
				}
			}
			r.mu.Lock()
			delete(r.procs, pid)
			r.mu.Unlock()
			ch <- ws
		}()
	}
	return pid, ch, nil
}

func (r *Reaper) loop() {
	for range r.sigs {
		r.reapAll()
	}
}

// reapAll reaps every exited child; a SIGCHLD may stand for several.
func (r *Reaper) reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.mu.Lock()
		ch, ok := r.procs[pid]
		delete(r.procs, pid)
		r.mu.Unlock()
		if ok {
			ch <- ws
		}
	}
}
