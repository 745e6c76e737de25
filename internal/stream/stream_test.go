package stream

import (
	"bytes"
	"io"
	"testing"
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
