package apiserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
)

// TestIdleConnectionsAreClosed: a client with no token that makes one
// request and then keeps the connection idle is cut after IdleTimeout.
// Before, the server had no idle timeout: such connections were held
// forever, and some thousands of them took every file descriptor of the
// process that also runs etcd and the node agent. A watch that outlives
// the timeout stays open (it is a response, not an idle connection).
func TestIdleConnectionsAreClosed(t *testing.T) {
	ss := newSecServer(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	if err := ss.srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.srv.Close() })
	base := "http://" + ss.srv.Addr()
	watch := watchNames(t, base+"/v1/instances?watch=true", acme)

	conn, err := net.Dial("tcp", ss.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("healthz = %d (close %v); want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	// Now idle: the server must close the connection.
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("read on the idle connection = %v; want EOF (closed by the server), not a timeout", err)
	}
	// The watch opened before outlived the idle timeout and still works.
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("late", nil))
	if !waitFor(t, watch, "late") {
		t.Fatal("the watch ended with the idle timeout; want it open")
	}
}

// TestUnauthenticatedSlowBodyIsCut: a client with no token declares a
// body and trickles it. The 401 must come at once and the connection
// close, not wait for the body.
func TestUnauthenticatedSlowBodyIsCut(t *testing.T) {
	ss := newSecServer(t, nil)
	if err := ss.srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.srv.Close() })
	for _, auth := range []string{"", "Authorization: Bearer cube_forged\r\n"} {
		conn, err := net.Dial("tcp", ss.srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "POST /v1/instances HTTP/1.1\r\nHost: x\r\n"+auth+"Content-Length: 200000\r\n\r\n0123456789"); err != nil {
			t.Fatal(err)
		}
		// The rest of the body never comes; the answer must not wait for it.
		conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer to a trickled body (auth %q) = %v; want a 401 at once", auth, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("answer = %d; want 401", resp.StatusCode)
		}
		if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Errorf("after the 401 the connection read %v; want EOF (closed by the server)", err)
		}
	}
}
