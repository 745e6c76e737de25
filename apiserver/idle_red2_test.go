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
