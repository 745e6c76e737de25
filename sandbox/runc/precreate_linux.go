package runc

import (
	"context"
	"fmt"
	"sync"
)

// precreateAll runs precreate for every container, in parallel.
func (s *runcSandbox) precreateAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, name := range s.order {
		wg.Go(func() { s.precreate(ctx, s.byName[name]) })
	}
	wg.Wait()
}

// precreate runs `runc create` for a container's first Start while Create
// builds the sandbox, so that Start has only `runc start` left to do. The
// shim creates the sandbox while the node agent still attaches the network
// and calls Start only once it is attached: the image's command must wait
// for that, runc's own work need not. The created init has joined the
// sandbox's namespaces and cgroup and blocks until `runc start` before it
// execs anything of the image.
//
// A failure is not Create's: Start runs `runc create` again and reports its
// error as the container's, as it would have without the head start.
func (s *runcSandbox) precreate(ctx context.Context, c *container) {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	out, err := openPipes(false)
	if err == nil {
		var r *run
		if r, err = s.create(ctx, c, out); err == nil {
			s.mu.Lock()
			c.pre, c.preOut = r, out
			s.mu.Unlock()
			return
		}
		out.finish()
	}
	s.log.Debug("runc create ahead of the first start failed; Start will try again", "container", c.spec.Name, "err", err)
}

// takePrecreated hands over the run precreate made, if it is still there.
// Preconditions: c.opMu held.
func (s *runcSandbox) takePrecreated(c *container) (*run, *pipes) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, out := c.pre, c.preOut
	c.pre, c.preOut = nil, nil
	return r, out
}

// killPrecreated kills and reaps the run precreate made, if it is still
// there: a container that is stopped or destroyed never starts.
// Preconditions: c.opMu held.
func (s *runcSandbox) killPrecreated(ctx context.Context, c *container) error {
	r, _ := s.takePrecreated(c)
	if r == nil {
		return nil
	}
	r.kill()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kill created container %s: %w", c.spec.Name, ctx.Err())
	}
}
