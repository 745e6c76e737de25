package agentapi

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
)

// fakeHelloAgent answers Hello; a Hello while block is set waits for release.
type fakeHelloAgent struct {
	AgentService
	block   chan struct{}
	release chan struct{}
}

func (f *fakeHelloAgent) Hello(ctx context.Context, _ *HelloRequest) (*HelloResponse, error) {
	if f.block != nil {
		select {
		case f.block <- struct{}{}:
			<-f.release
		default:
		}
	}
	return &HelloResponse{AgentVersion: "v", KernelRelease: "k"}, nil
}

// port is a virtio-serial port as QEMU makes it: the guest's end stays
// open across hosts; each host connects anew, and what the guest writes
// while no host is there is lost.
type port struct {
	guest net.Conn
	mu    sync.Mutex
	cur   net.Conn // protected by mu
}

func newPort(guest net.Conn) *port {
	p := &port{guest: guest}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := guest.Read(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			c := p.cur
			p.mu.Unlock()
			if c != nil {
				c.Write(buf[:n])
			}
		}
	}()
	return p
}

func (p *port) connect() net.Conn {
	host, mine := net.Pipe()
	p.mu.Lock()
	p.cur = mine
	p.mu.Unlock()
	go io.Copy(p.guest, mine)
	return host
}

// oneConn is a listener that hands the server one connection.
type oneConn struct {
	c    chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *oneConn) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *oneConn) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *oneConn) Addr() net.Addr { return &net.UnixAddr{} }

// TestSessionAfterResume: the guest's server keeps one connection across
// hosts (a VM restored from a suspend). A new plain client is refused;
// one that continues after the last host's stream ids works, and the
// answer the guest still owed the last host does not reach it.
func TestSessionAfterResume(t *testing.T) {
	vmSide, guest := net.Pipe()
	defer vmSide.Close()
	p := newPort(vmSide)
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agent := &fakeHelloAgent{block: make(chan struct{}), release: make(chan struct{})}
	RegisterAgentService(srv, agent)
	l := &oneConn{c: make(chan net.Conn, 1), done: make(chan struct{})}
	l.c <- guest
	go srv.Serve(context.Background(), l)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	first := NewClient(p.connect())
	for range 3 {
		agent.block = nil
		if _, err := first.Hello(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// One call left hanging when the host goes (a long poll).
	agent.block = make(chan struct{})
	go first.Hello(context.Background())
	<-agent.block
	last := first.LastStreamID()
	if last != 7 {
		t.Fatalf("LastStreamID = %d after 4 calls, want 7", last)
	}
	first.Close()

	agent.block = nil
	fresh := NewClient(p.connect())
	if _, err := fresh.Hello(ctx); err == nil || !strings.Contains(err.Error(), "StreamID") {
		t.Fatalf("a fresh client on the old session: %v; want the server to refuse its stream id", err)
	}
	fresh.Close()
	next := NewClientAfter(p.connect(), last+2) // the refused client used one more
	close(agent.release)                        // the old call answers now, to nobody
	for range 3 {
		if _, err := next.Hello(ctx); err != nil {
			t.Fatalf("a client continuing the session: %v", err)
		}
	}
	if got := next.LastStreamID(); got <= last+2 {
		t.Errorf("the continuing client's last id %d is not past %d", got, last+2)
	}
}
