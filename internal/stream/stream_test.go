package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	big := bytes.Repeat([]byte("x"), MaxFrame+10)
	if _, err := w.KindWriter(Stdout).Write(big); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(Exit, []byte("3")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		f, err := ReadFrame(&buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch f.Kind {
		case Stdout:
			got = append(got, f.Payload...)
		case Exit:
			if string(f.Payload) != "3" {
				t.Errorf("exit payload = %q; want 3", f.Payload)
			}
		default:
			t.Errorf("unexpected kind %d", f.Kind)
		}
	}
	if !bytes.Equal(got, big) {
		t.Errorf("stdout: got %d bytes; want %d", len(got), len(big))
	}
}

func TestOversizedFrameRefused(t *testing.T) {
	hdr := []byte{byte(Stdout), 0xff, 0xff, 0xff, 0xff}
	if _, err := ReadFrame(bytes.NewReader(hdr)); err == nil {
		t.Fatal("ReadFrame accepted a 4 GiB frame header")
	}
	if err := NewWriter(io.Discard).WriteFrame(Stdin, make([]byte, MaxFrame+1)); err == nil {
		t.Fatal("WriteFrame accepted an oversized payload")
	}
}

// TestRunClient drives a session against an echoing peer: stdin comes back
// as stdout, a resize arrives, and the peer's exit code is returned.
func TestRunClient(t *testing.T) {
	client, server := net.Pipe()
	resized := make(chan WindowSize, 1)
	go func() {
		defer server.Close()
		fw := NewWriter(server)
		for {
			f, err := ReadFrame(server)
			if err != nil {
				return
			}
			switch f.Kind {
			case Stdin:
				_ = fw.WriteFrame(Stdout, f.Payload)
			case Resize:
				var ws WindowSize
				_ = json.Unmarshal(f.Payload, &ws)
				resized <- ws
			case CloseStdin:
				ws := <-resized
				_ = fw.WriteFrame(Stderr, []byte(fmt.Sprintf("%dx%d", ws.Rows, ws.Cols)))
				_ = fw.WriteFrame(Exit, []byte("5"))
				return
			}
		}
	}()
	resize := make(chan WindowSize, 1)
	resize <- WindowSize{Rows: 24, Cols: 80}
	var out, errOut bytes.Buffer
	// Let the resize go out before stdin ends.
	stdin := io.MultiReader(strings.NewReader("hello"), delay{50 * time.Millisecond})
	code, err := RunClient(context.Background(), client, stdin, &out, &errOut, resize)
	if err != nil || code != 5 || out.String() != "hello" || errOut.String() != "24x80" {
		t.Errorf("RunClient = %d, %v, stdout %q, stderr %q; want 5, nil, hello, 24x80", code, err, out.String(), errOut.String())
	}
}

type delay struct{ d time.Duration }

func (d delay) Read([]byte) (int, error) { time.Sleep(d.d); return 0, io.EOF }
