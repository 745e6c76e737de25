package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// The agent and a container's init talk over a SOCK_SEQPACKET socketpair:
// one JSON message per packet, file descriptors (stdio) as SCM_RIGHTS.
// The init runs inside the container, where root can ptrace it: the agent
// reads its messages with a bound and trusts nothing in them but the ids
// it knows.

const (
	maxInitMsg   = 1 << 20 // agent -> init (a command line is at most ~300 KiB of JSON)
	maxReplyMsg  = 4096    // init -> agent
	maxPassedFDs = 3
)

// initConfig is the container init's first message: how to build the
// container's root before pivot_root.
type initConfig struct {
	// RootFS is the container's root (an overlay mount) in the agent's
	// mount namespace, which the init starts in.
	RootFS   string `json:"rootfs"`
	Hostname string `json:"hostname"`
	// Files are bind-mounted read-only over /etc/<name> (resolv.conf,
	// hosts, hostname).
	Files map[string]string `json:"files"`
}

// initMsg is every later message, both ways.
type initMsg struct {
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

func socketpair() (agentEnd, initEnd *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "agent-init"), os.NewFile(uintptr(fds[1]), "init-agent"), nil
}

func fileConn(f *os.File) (*net.UnixConn, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("not a unix socket")
	}
	return uc, nil
}

func sendMsg(c *net.UnixConn, v any, files ...*os.File) error {
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
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

// recvMsg reads one message of at most max bytes into v and returns the
// files passed with it. A message cut short (MSG_TRUNC) or with more
// files than expected is an error; every received fd is either returned
// or closed.
func recvMsg(c *net.UnixConn, max int, v any) ([]*os.File, error) {
	buf := make([]byte, max+1)
	oob := make([]byte, unix.CmsgSpace(4*maxPassedFDs))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
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
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if n == 0 && flags == 0 && oobn == 0 {
		return nil, errors.New("connection closed")
	}
	if n > max || flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || len(files) > maxPassedFDs {
		closeAll()
		return nil, fmt.Errorf("message over %d bytes or %d files", max, maxPassedFDs)
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		closeAll()
		return nil, fmt.Errorf("bad message: %w", err)
	}
	return files, nil
}
