package agentapi

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// A guest's ttRPC server remembers the highest stream id its one
// connection has seen, and a VM restored from a suspend still has that
// connection: a new host client, whose first call is stream 1 again,
// would be refused ("StreamID cannot be re-used"). So a host that
// resumes a VM continues the session of the host before it: its frames'
// stream ids are shifted past the last one that host used, and the
// answers the guest still owes that host are dropped.

// ttRPC's frame header: length, stream id (both big-endian uint32), type
// and flags; at most 4 MiB of payload.
const (
	frameHeader = 10
	frameMax    = 4 << 20
)

// sessionConn shifts the stream ids of the frames through it by off
// (even, so a client's odd ids stay odd).
type sessionConn struct {
	net.Conn
	off uint32
	max atomic.Uint32 // highest (shifted) stream id written

	wmu   sync.Mutex
	whdr  []byte // a header being written, until complete; protected by wmu
	wleft int    // payload bytes left of the frame being written; protected by wmu

	rmu     sync.Mutex
	br      *bufio.Reader // protected by rmu
	pending []byte        // a shifted frame not yet read; protected by rmu
	rerr    error         // protected by rmu
}

func newSessionConn(c net.Conn, after uint32) *sessionConn {
	off := after + after%2 // even
	s := &sessionConn{Conn: c, off: off, br: bufio.NewReaderSize(c, 64<<10)}
	s.max.Store(off)
	return s
}

// Write shifts each frame header in p; a header may come in pieces.
func (s *sessionConn) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	out := make([]byte, 0, len(p))
	for rest := p; len(rest) > 0; {
		if s.wleft > 0 {
			n := min(s.wleft, len(rest))
			out, rest, s.wleft = append(out, rest[:n]...), rest[n:], s.wleft-n
			continue
		}
		n := min(frameHeader-len(s.whdr), len(rest))
		s.whdr, rest = append(s.whdr, rest[:n]...), rest[n:]
		if len(s.whdr) < frameHeader {
			continue
		}
		id := binary.BigEndian.Uint32(s.whdr[4:8]) + s.off
		binary.BigEndian.PutUint32(s.whdr[4:8], id)
		if id > s.max.Load() {
			s.max.Store(id)
		}
		s.wleft = int(binary.BigEndian.Uint32(s.whdr[0:4]))
		out, s.whdr = append(out, s.whdr...), s.whdr[:0]
	}
	if _, err := s.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Read hands out whole frames, shifted back; frames of the previous
// host's streams (ids at most off) are dropped.
func (s *sessionConn) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for len(s.pending) == 0 {
		if s.rerr != nil {
			return 0, s.rerr
		}
		s.pending, s.rerr = s.nextFrame()
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

func (s *sessionConn) nextFrame() ([]byte, error) {
	hdr := make([]byte, frameHeader)
	if _, err := io.ReadFull(s.br, hdr); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	if n > frameMax {
		return nil, fmt.Errorf("agent frame of %d bytes: %w", n, ErrMalformed)
	}
	frame := make([]byte, frameHeader+int(n))
	copy(frame, hdr)
	if _, err := io.ReadFull(s.br, frame[frameHeader:]); err != nil {
		return nil, err
	}
	id := binary.BigEndian.Uint32(hdr[4:8])
	if id <= s.off {
		return nil, nil // owed to the host before this one
	}
	binary.BigEndian.PutUint32(frame[4:8], id-s.off)
	return frame, nil
}
