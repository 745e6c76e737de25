package qmp

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
)

// fakeQEMU serves one QMP connection from a script, standing in for a
// broken or hostile QEMU (the real one is tested in vmm/qemu). Each
// handler gets the client's request line and returns what to send back.
func fakeQEMU(t *testing.T, greeting string, handle func(req string) string) net.Conn {
	t.Helper()
	c, s := net.Pipe()
	go func() {
		defer s.Close()
		if _, err := s.Write([]byte(greeting)); err != nil {
			return
		}
		br := bufio.NewReader(s)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			out := handle(line)
			if out == "" {
				return
			}
			if _, err := s.Write([]byte(out)); err != nil {
				return
			}
		}
	}()
	return c
}

const greeting = `{"QMP": {"version": {}, "capabilities": []}}` + "\r\n"

func idOf(req string) string {
	i := strings.Index(req, `"id":`)
	rest := req[i+5:]
	j := strings.IndexAny(rest, ",}")
	return rest[:j]
}

func TestHandshakeStatusEvents(t *testing.T) {
	conn := fakeQEMU(t, greeting, func(req string) string {
		id := idOf(req)
		switch {
		case strings.Contains(req, "qmp_capabilities"):
			return `{"return": {}, "id": ` + id + "}\r\n"
		case strings.Contains(req, "query-status"):
			return `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}}` + "\r\n" +
				`{"return": {"status": "running", "running": true}, "id": ` + id + "}\r\n"
		}
		return `{"error": {"class": "CommandNotFound", "desc": "no"}, "id": ` + id + "}\r\n"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := New(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.QueryStatus(ctx)
	if err != nil || !st.Running || st.Status != "running" {
		t.Errorf("QueryStatus = %+v, %v; want running", st, err)
	}
	ev := <-c.Events()
	if ev.Name != "SHUTDOWN" || !strings.Contains(string(ev.Data), "guest-reset") {
		t.Errorf("event = %+v; want SHUTDOWN guest-reset", ev)
	}
	_, err = c.Execute(ctx, "bogus", nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("Execute(bogus) = %v; want a CommandNotFound *Error", err)
	}
}

// TestHostile: whatever the peer sends, the client returns an error (never
// panics or hangs), and an overlong line is refused before it is buffered.
func TestHostile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		greeting string
		reply    string
	}{
		{"not json greeting", "hello\n", ""},
		{"no QMP key", `{"foo": 1}` + "\n", ""},
		{"huge greeting", strings.Repeat("a", MaxLine+10) + "\n", ""},
		{"malformed reply", greeting, "{]\n"},
		{"reply without id", greeting, `{"return": {}}` + "\n"},
		{"huge reply", greeting, `{"return": "` + strings.Repeat("x", MaxLine+10) + `"}` + "\n"},
		{"hang up", greeting, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := fakeQEMU(t, tc.greeting, func(string) string { return tc.reply })
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := New(ctx, conn)
			if err == nil {
				c.Close()
				t.Fatalf("New succeeded against a hostile peer")
			}
			if ctx.Err() != nil {
				t.Errorf("New took until the deadline: %v", err)
			}
		})
	}
}

// TestSilentPeer: a peer that never greets runs into the caller's deadline.
func TestSilentPeer(t *testing.T) {
	c, s := net.Pipe()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := New(ctx, c)
	if !errors.Is(err, errdefs.ErrTimeout) {
		t.Errorf("New = %v; want a timeout", err)
	}
}

// FuzzReadLoop feeds arbitrary bytes after a valid handshake: the client
// must end with an error or keep going, never panic.
func FuzzReadLoop(f *testing.F) {
	f.Add([]byte(`{"event":"SHUTDOWN","data":{"guest":true}}` + "\n"))
	f.Add([]byte(`{"return":{},"id":99}` + "\n"))
	f.Add([]byte("{\"id\":\"x\"}\n\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, s := net.Pipe()
		go func() {
			s.Write([]byte(greeting))
			br := bufio.NewReader(s)
			line, _ := br.ReadString('\n')
			s.Write([]byte(`{"return": {}, "id": ` + idOf(line) + "}\n"))
			s.Write(data)
			s.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cl, err := New(ctx, c)
		if err != nil {
			return
		}
		for range cl.Events() {
		}
		cl.Close()
	})
}

// TestSendFile: getfd carries the descriptor as SCM_RIGHTS on a unix
// socket, and is refused on any other connection.
func TestSendFile(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	cf, sf := os.NewFile(uintptr(fds[0]), "c"), os.NewFile(uintptr(fds[1]), "s")
	cconn, _ := net.FileConn(cf)
	sconn, _ := net.FileConn(sf)
	cf.Close()
	sf.Close()
	defer sconn.Close()
	gotFD := make(chan bool, 1)
	go func() {
		us := sconn.(*net.UnixConn)
		us.Write([]byte(greeting))
		buf, oob := make([]byte, 4096), make([]byte, 256)
		for {
			n, oobn, _, _, err := us.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			req := string(buf[:n])
			if strings.Contains(req, "getfd") {
				msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
				ok := false
				for _, m := range msgs {
					if fds, err := unix.ParseUnixRights(&m); err == nil && len(fds) == 1 {
						ok = true
						unix.Close(fds[0])
					}
				}
				gotFD <- ok
			}
			us.Write([]byte(`{"return": {}, "id": ` + idOf(req) + "}\n"))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := New(ctx, cconn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	if err := c.SendFile(ctx, "snap", f); err != nil {
		t.Fatal(err)
	}
	if !<-gotFD {
		t.Errorf("getfd arrived without a descriptor")
	}

	pc := fakeQEMU(t, greeting, func(req string) string { return `{"return": {}, "id": ` + idOf(req) + "}\n" })
	defer pc.Close()
	c2, err := New(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.SendFile(ctx, "snap", f); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("SendFile over a pipe = %v; want ErrInvalid", err)
	}
}
