package agent

import (
	"errors"
	"net"
	"os"

	"github.com/cube-platform/cube/guest/cinit/initproto"
)

// The agent and a container's init (cmd/cube-init) talk initproto; these
// are the agent's names for it, over a net.UnixConn (for its deadlines,
// and a Close that ends a blocked read).

type (
	initConfig = initproto.Config
	initMsg    = initproto.Msg
)

const maxReplyMsg = initproto.MaxReplyMsg

// unixConn is a net.UnixConn as an initproto.Conn.
type unixConn struct{ c *net.UnixConn }

func (u unixConn) ReadMsg(b, oob []byte) (n, oobn, flags int, err error) {
	n, oobn, flags, _, err = u.c.ReadMsgUnix(b, oob)
	return n, oobn, flags, err
}

func (u unixConn) WriteMsg(b, oob []byte) error {
	_, _, err := u.c.WriteMsgUnix(b, oob, nil)
	return err
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
	return initproto.Send(unixConn{c}, v, files...)
}

func recvMsg(c *net.UnixConn, max int, v any) ([]*os.File, error) {
	return initproto.Recv(unixConn{c}, max, v)
}

func closeFiles(fs []*os.File) { initproto.CloseFiles(fs) }
