// Package initproto is the wire protocol between the guest agent and a
// container's init (guest/cinit): a SOCK_SEQPACKET socketpair, one JSON
// message per packet, file descriptors (stdio) as SCM_RIGHTS.
//
// The init runs inside the container, where root can ptrace it: the agent
// reads its messages with a bound and trusts nothing in them but the ids
// it knows.
//
// Both binaries import this package, and the container init pays for its
// imports at every container start (under TCG, every instruction is
// emulated): it must depend only on the standard library and x/sys/unix,
// never on protobuf, ttrpc, grpc, netlink, regexp or net.
package initproto

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	MaxInitMsg   = 1 << 20 // agent -> init (a command line is at most ~300 KiB of JSON)
	MaxReplyMsg  = 4096    // init -> agent
	MaxPassedFDs = 3
)

// InitFD is the init's end of the socketpair: the agent passes it as fd 3.
const InitFD = 3

// Config is the container init's first message: how to build the
// container's root before pivot_root.
type Config struct {
	// RootFS is the container's root (an overlay mount) in the agent's
	// mount namespace, which the init starts in.
	RootFS   string `json:"rootfs"`
	Hostname string `json:"hostname"`
	// Files are bind-mounted read-only over /etc/<name> (resolv.conf,
	// hosts, hostname).
	Files map[string]string `json:"files"`
}

// Msg is every later message, both ways.
type Msg struct {
	Op string `json:"op"` // run, signal (to init); ready, started, failed, exited (from it)
	ID string `json:"id"` // "" is the container's main process, else an exec id

	// run
	Args   []string `json:"args,omitempty"`
	Env    []string `json:"env,omitempty"`
	Cwd    string   `json:"cwd,omitempty"`
	UID    uint32   `json:"uid,omitempty"`
	GID    uint32   `json:"gid,omitempty"`
	Groups []uint32 `json:"groups,omitempty"`
	TTY    bool     `json:"tty,omitempty"`

	Signal int    `json:"signal,omitempty"` // signal
	Pid    int    `json:"pid,omitempty"`    // started (in the container's pid namespace)
	Status int    `json:"status,omitempty"` // exited: the raw wait status
	Error  string `json:"error,omitempty"`  // failed
}

// Conn is one end of the socketpair: an FDConn in the init, the agent's
// net.UnixConn (for its deadlines) behind a small adapter.
type Conn interface {
	// ReadMsg reads one packet and its control data; flags are recvmsg's.
	ReadMsg(b, oob []byte) (n, oobn, flags int, err error)
	// WriteMsg writes one packet with its control data.
	WriteMsg(b, oob []byte) error
}

// Socketpair returns the two ends, both close-on-exec: the agent hands
// initEnd to the init as InitFD.
func Socketpair() (agentEnd, initEnd *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "agent-init"), os.NewFile(uintptr(fds[1]), "init-agent"), nil
}

// Send writes v as one message, with files as SCM_RIGHTS.
func Send(c Conn, v any, files ...*os.File) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	return c.WriteMsg(b, oob)
}

// Recv reads one message of at most max bytes into v and returns the
// files passed with it. A message cut short (MSG_TRUNC) or with more
// files than MaxPassedFDs is an error; every received fd is either
// returned or closed.
func Recv(c Conn, max int, v any) ([]*os.File, error) {
	return RecvBuf(c, make([]byte, max+1), v)
}

// RecvBuf is Recv into buf, whose length is the bound plus one. A reader
// that reuses buf allocates no MiB per message: in the container init,
// whose heap is otherwise tiny, a fresh MiB per message meant a GC cycle
// every few messages and the pages faulted in again each time, which
// under TCG doubled an exec's time (BenchmarkExec in sandbox/microvm:
// p50 ~150-300 ms against ~30 ms with one buffer; the init's RSS 7.5 MB
// against 2.9 MB).
func RecvBuf(c Conn, buf []byte, v any) ([]*os.File, error) {
	max := len(buf) - 1
	oob := make([]byte, unix.CmsgSpace(4*MaxPassedFDs))
	n, oobn, flags, err := c.ReadMsg(buf, oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	if oobn > 0 {
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for _, cm := range cmsgs {
				fds, err := unix.ParseUnixRights(&cm)
				if err != nil {
					continue
				}
				for _, fd := range fds {
					files = append(files, os.NewFile(uintptr(fd), "passed"))
				}
			}
		}
	}
	if n == 0 && flags == 0 && oobn == 0 {
		return nil, errors.New("connection closed")
	}
	if n > max || flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || len(files) > MaxPassedFDs {
		CloseFiles(files)
		return nil, fmt.Errorf("message over %d bytes or %d files", max, MaxPassedFDs)
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		CloseFiles(files)
		return nil, fmt.Errorf("bad message: %w", err)
	}
	return files, nil
}

// CloseFiles closes every file of fs.
func CloseFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// FDConn is the init's end: a socket fd read and written with
// recvmsg/sendmsg through the runtime's poller (os.File's RawConn), not
// the net package, whose start-up the init would pay. Through the poller,
// a goroutine waiting for the agent parks instead of holding a thread and
// a P in a blocking recvmsg. Received fds are close-on-exec. A packet is
// written whole or not at all, so concurrent WriteMsg calls do not
// interleave.
type FDConn struct {
	f  *os.File
	rc syscall.RawConn
}

// NewFDConn takes fd over: it makes it non-blocking (so that os.NewFile
// gives a pollable file) and close-on-exec (what the init starts must not
// inherit its channel to the agent).
func NewFDConn(fd int) (*FDConn, error) {
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("agent socket fd %d: %w", fd, err)
	}
	f := os.NewFile(uintptr(fd), "agent")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("agent socket fd %d: %w", fd, err)
	}
	return &FDConn{f: f, rc: rc}, nil
}

// ReadMsg implements Conn.
func (c *FDConn) ReadMsg(b, oob []byte) (n, oobn, flags int, err error) {
	var serr error
	err = c.rc.Read(func(fd uintptr) bool {
		for {
			n, oobn, flags, _, serr = unix.Recvmsg(int(fd), b, oob, unix.MSG_CMSG_CLOEXEC)
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	})
	if err == nil {
		err = serr
	}
	return n, oobn, flags, err
}

// WriteMsg implements Conn.
func (c *FDConn) WriteMsg(b, oob []byte) error {
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		for {
			serr = unix.Sendmsg(int(fd), b, oob, nil, 0)
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	})
	if err == nil {
		err = serr
	}
	return err
}

// Close closes the socket.
func (c *FDConn) Close() error { return c.f.Close() }
