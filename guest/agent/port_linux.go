package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
)

// PortName is the virtio-serial port the agent serves on.
const PortName = "cube.agent"

// findPort waits (until ctx ends) for the virtio-serial port named name
// and returns its device path (/dev/vportNpM).
func findPort(ctx context.Context, name string) (string, error) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		matches, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err == nil && strings.TrimSpace(string(b)) == name {
				dev := filepath.Join("/dev", filepath.Base(filepath.Dir(m)))
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			devs, _ := filepath.Glob("/sys/bus/virtio/devices/*")
			return "", fmt.Errorf("no virtio-serial port named %q among %q (virtio devices %q; start QEMU with -device virtserialport,name=%s): %w", name, matches, devs, name, ctx.Err())
		case <-tick.C:
		}
	}
}

// portConn is the port's character device as a net.Conn. os.File gives
// it deadlines (the device is pollable).
type portConn struct {
	*os.File
	once   sync.Once
	closed chan struct{}
}

type portAddr string

func (a portAddr) Network() string { return "virtio-serial" }
func (a portAddr) String() string  { return string(a) }

// hostPoll is how often a port with no host connected is read again. The
// guest learns of a host only by its read no longer ending at EOF (poll
// says POLLHUP until then), so this is a poll of that condition.
const hostPoll = 5 * time.Millisecond

// Read reads the port. A read while no host is connected ends at EOF;
// the port is not closed then but read again until the host is there:
// closing it would discard what the host sent in the meantime (the
// virtio console driver drops a port's unread data on release).
func (c *portConn) Read(p []byte) (int, error) {
	var t *time.Timer
	for {
		n, err := c.File.Read(p)
		if n > 0 || err != io.EOF {
			if t != nil {
				t.Stop()
			}
			return n, err
		}
		if t == nil {
			t = time.NewTimer(hostPoll)
		} else {
			t.Reset(hostPoll)
		}
		select {
		case <-c.closed:
			t.Stop()
			return 0, net.ErrClosed
		case <-t.C:
		}
	}
}

func (c *portConn) LocalAddr() net.Addr  { return portAddr(c.Name()) }
func (c *portConn) RemoteAddr() net.Addr { return portAddr("host") }
func (c *portConn) Close() error {
	err := c.File.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// connListener hands out connections from a channel: the port,
// reopened each time the host hangs up, or a test's socket.
type connListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnListener() *connListener {
	return &connListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return portAddr(PortName) }

// offer gives the server c; false once the listener is closed.
func (l *connListener) offer(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// ServeConn serves the agent API on one connection (tests: a socket)
// until it closes or ctx ends.
func (a *Agent) ServeConn(ctx context.Context, conn net.Conn) error {
	srv, err := a.NewServer()
	if err != nil {
		return err
	}
	l := newConnListener()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		l.Close()
		srv.Close()
	}()
	go l.offer(conn)
	err = srv.Serve(ctx, l)
	if errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) || errors.Is(err, ttrpc.ErrServerClosed) {
		return nil
	}
	return err
}

// servePort serves on the virtio-serial port until ctx ends. The port
// stays open across the host's absence (see portConn.Read); should the
// server drop it on an error, it is opened again.
func (a *Agent) servePort(ctx context.Context, dev string, srv *ttrpc.Server, opened func()) error {
	l := newConnListener()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, l) }()
	defer l.Close()
	for {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", dev, err)
		}
		c := &portConn{File: f, closed: make(chan struct{})}
		if !l.offer(c) {
			c.Close()
			return <-errc
		}
		if opened != nil {
			opened()
			opened = nil
		}
		select {
		case <-c.closed:
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		}
	}
}
