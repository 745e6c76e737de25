package runc

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/cube-platform/cube/sandbox"
)

// pipes connect a process started by runc to the caller's stdio. runc
// hands its own stdin/stdout/stderr to the container process when there is
// no terminal, so these are OS pipes whose child ends go to runc.
type pipes struct {
	stdinR, stdoutW, stderrW *os.File // child ends (stdinR nil: /dev/null)
	stdinW                   *os.File
	readers                  []*os.File // our ends of stdout and stderr
	copies                   sync.WaitGroup
	finishOnce               sync.Once

	mu        sync.Mutex
	attached  bool // copying has started; protected by mu
	finishing bool // finish has begun: no copy may start; protected by mu
}

// newPipes starts copying: stdio.Stdin into the process, its stdout and
// stderr out to stdio's writers (nil writers discard). With keepDraining,
// output is still read (and dropped) after a writer fails, so a container
// never blocks on a full pipe because its log broke; without it the pipe is
// closed and the process gets EPIPE, as a shell pipeline would.
func newPipes(stdio sandbox.Stdio, keepDraining bool) (*pipes, error) {
	p, err := openPipes(stdio.Stdin != nil)
	if err != nil {
		return nil, err
	}
	p.attach(stdio, keepDraining)
	return p, nil
}

// openPipes makes the pipes (an input pipe only withStdin) without copying
// anything yet: what the process writes waits in the pipe until attach.
func openPipes(withStdin bool) (p *pipes, err error) {
	p = &pipes{}
	defer func() {
		if err != nil {
			p.closeChildEnds()
			p.closeOurEnds()
		}
	}()
	for range 2 {
		var r, w *os.File
		if r, w, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("create output pipe: %w", err)
		}
		p.readers = append(p.readers, r)
		if p.stdoutW == nil {
			p.stdoutW = w
		} else {
			p.stderrW = w
		}
	}
	if withStdin {
		if p.stdinR, p.stdinW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("create input pipe: %w", err)
		}
	}
	return p, nil
}

// attach starts copying (see newPipes), once. It does nothing after
// finish began: the process is gone and its pipes are being closed.
func (p *pipes) attach(stdio sandbox.Stdio, keepDraining bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.attached || p.finishing {
		return
	}
	p.attached = true
	for i, dst := range []io.Writer{stdio.Stdout, stdio.Stderr} {
		if dst == nil {
			dst = io.Discard
		}
		r := p.readers[i]
		p.copies.Add(1)
		go func() {
			defer p.copies.Done()
			if _, err := io.Copy(dst, r); err != nil && keepDraining {
				io.Copy(io.Discard, r)
			}
		}()
	}
	if p.stdinW != nil && stdio.Stdin != nil {
		// Not waited for: it may sit in the caller's Read until the caller
		// closes its reader; a write after the process exits just fails.
		go func(w *os.File) {
			io.Copy(w, stdio.Stdin)
			w.Close()
		}(p.stdinW)
	}
}

// child returns the ends runc (and the process) should get.
func (p *pipes) child() runcStdio {
	return runcStdio{stdin: p.stdinR, stdout: p.stdoutW, stderr: p.stderrW}
}

// closeChildEnds drops our copies of the child's ends once runc has them,
// so that EOF arrives when the process side closes.
func (p *pipes) closeChildEnds() {
	for _, f := range []*os.File{p.stdinR, p.stdoutW, p.stderrW} {
		if f != nil {
			f.Close()
		}
	}
}

func (p *pipes) closeOurEnds() {
	for _, f := range p.readers {
		f.Close()
	}
	if p.stdinW != nil {
		p.stdinW.Close()
	}
}

// finish is called after the process exited: it lets output drain for up
// to drainTimeout (a background child may still hold the pipe open), then
// stops the copies and closes everything.
func (p *pipes) finish() {
	p.finishOnce.Do(func() {
		p.mu.Lock()
		p.finishing = true
		p.mu.Unlock()
		done := make(chan struct{})
		go func() {
			p.copies.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(drainTimeout):
			for _, r := range p.readers {
				r.SetReadDeadline(time.Now())
			}
			<-done
		}
		p.closeOurEnds()
	})
}
