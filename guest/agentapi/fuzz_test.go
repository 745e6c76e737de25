package agentapi

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
)

// frame is one ttRPC wire frame: a 10-byte header (length, stream id,
// type, flags) and the payload.
func frame(stream uint32, typ, flags byte, payload []byte) []byte {
	b := make([]byte, 10, 10+len(payload))
	binary.BigEndian.PutUint32(b[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[4:8], stream)
	b[8], b[9] = typ, flags
	return append(b, payload...)
}

const messageTypeResponse = 2

func response(t testing.TB, m proto.Message) []byte {
	p, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	r, err := proto.Marshal(&ttrpc.Response{Payload: p})
	if err != nil {
		t.Fatal(err)
	}
	return frame(1, messageTypeResponse, 0, r)
}

// fakeAgent is a stand-in for a hostile guest: it reads the client's one
// request and answers with raw bytes, whatever they are. (The real agent
// is tested in guest/agent; this exercises the host's decoding alone.)
func fakeAgent(conn net.Conn, answer []byte) {
	defer conn.Close()
	var h [10]byte
	if _, err := io.ReadFull(conn, h[:]); err != nil {
		return
	}
	n := binary.BigEndian.Uint32(h[0:4])
	if n > 1<<20 {
		return
	}
	if _, err := io.CopyN(io.Discard, conn, int64(n)); err != nil {
		return
	}
	conn.Write(answer)
}

// call runs the client method chosen by op against a guest answering b,
// and checks that whatever comes back respects the API's bounds.
func call(t *testing.T, op byte, b []byte) {
	host, guest := net.Pipe()
	go fakeAgent(guest, b)
	c := NewClient(host)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p := Process{Container: "app"}
	switch op % 8 {
	case 0:
		info, err := c.Hello(ctx)
		if err == nil {
			for _, s := range []string{info.AgentVersion, info.KernelRelease, info.BootID} {
				if len(s) > MaxInfoBytes {
					t.Errorf("Hello returned a %d-byte string", len(s))
				}
			}
		}
	case 1:
		st, err := c.Wait(ctx, p)
		if err == nil && (st.Code < 0 || st.Code > 255 || st.Signal < 0 || st.Signal > 64) {
			t.Errorf("Wait returned %+v", st)
		}
	case 2:
		data, err := c.ReadOutput(ctx, p, Stream_STREAM_STDOUT, 0, 100)
		if err == nil && (len(data) == 0 || len(data) > 100) {
			t.Errorf("ReadOutput(max 100) returned %d bytes", len(data))
		}
	case 3:
		ps, err := c.State(ctx)
		if err == nil {
			for _, s := range ps {
				if !ValidName(s.Process.Container) || s.Pid < 0 {
					t.Errorf("State returned %+v", s)
				}
			}
		}
	case 4:
		pid, err := c.Start(ctx, "app")
		if err == nil && pid <= 0 {
			t.Errorf("Start returned pid %d", pid)
		}
	case 6:
		got, st, err := c.WaitAny(ctx, p, Process{Container: "app", ExecID: "e1"})
		if err == nil && (got.Container != "app" || (got.ExecID != "" && got.ExecID != "e1") || st.Code < 0 || st.Code > 255) {
			t.Errorf("WaitAny returned %+v, %+v", got, st)
		}
	case 7:
		// Resume answers nothing but Empty: whatever comes back, it
		// neither panics nor hangs (the fuzz's own check).
		c.Resume(ctx, 1, nil)
	case 5:
		n, err := c.WriteStdin(ctx, p, []byte("hello"))
		if n < 0 || n > 5 || (err == nil && n != 5) {
			t.Errorf("WriteStdin(5 bytes) = %d, %v", n, err)
		}
	}
}

// FuzzDecodeResponse feeds the host's client whatever a hostile guest
// could write on the agent port (ttRPC frames with any header and any
// protobuf payload) and asserts it never panics nor hangs past its
// deadline, and that what it accepts respects the API's bounds.
func FuzzDecodeResponse(f *testing.F) {
	f.Add(byte(0), response(f, &HelloResponse{AgentVersion: "v1", KernelRelease: "6.1.0", BootId: "b"}))
	f.Add(byte(0), response(f, &HelloResponse{AgentVersion: "\x1b[2J"}))
	f.Add(byte(1), response(f, &WaitResponse{ExitCode: 137, Signal: 9, OomKilled: true, StartedUnixNano: 1, FinishedUnixNano: 2}))
	f.Add(byte(1), response(f, &WaitResponse{ExitCode: -1}))
	f.Add(byte(2), response(f, &ReadOutputResponse{Data: []byte("out")}))
	f.Add(byte(2), response(f, &ReadOutputResponse{Data: make([]byte, 1000)}))
	f.Add(byte(2), response(f, &ReadOutputResponse{Eof: true}))
	f.Add(byte(3), response(f, &StateResponse{Processes: []*ProcessState{{Process: &ProcessRef{Container: "app"}, Status: Status_STATUS_RUNNING, Pid: 7}}}))
	f.Add(byte(3), response(f, &StateResponse{Processes: []*ProcessState{{Process: &ProcessRef{Container: "../x"}, Status: 99}}}))
	f.Add(byte(4), response(f, &StartResponse{Pid: 12}))
	f.Add(byte(5), response(f, &WriteStdinResponse{Written: 5}))
	f.Add(byte(5), response(f, &WriteStdinResponse{Written: 500}))
	f.Add(byte(6), response(f, &WaitAnyResponse{Process: &ProcessRef{Container: "app", ExecId: "e1"}, Exit: &WaitResponse{ExitCode: 1}}))
	f.Add(byte(6), response(f, &WaitAnyResponse{Process: &ProcessRef{Container: "other"}, Exit: &WaitResponse{}}))
	f.Add(byte(7), response(f, &Empty{}))
	f.Add(byte(7), frame(1, messageTypeResponse, 0, []byte{0x0a, 0xff}))
	f.Add(byte(0), frame(1, messageTypeResponse, 0, []byte{0xff, 0xff, 0xff}))
	f.Add(byte(1), frame(7, messageTypeResponse, 0, nil))
	f.Add(byte(2), []byte{0x00, 0xff, 0xff, 0xff, 0, 0, 0, 1, 2, 0})
	f.Add(byte(3), frame(1, 9, 0xff, []byte("junk")))
	f.Fuzz(func(t *testing.T, op byte, b []byte) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			call(t, op, b)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			panic(fmt.Sprintf("client hung past its deadline on op %d, answer %q", op, b))
		}
	})
}
