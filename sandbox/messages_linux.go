package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// msgType names a handshake message between parent and child.
type msgType string

const (
	// msgRelease (parent → child): maps written, hooks run; go on.
	msgRelease msgType = "release"
	// msgFUSEFD (child → parent, with the /dev/fuse fd): serve this mount.
	msgFUSEFD msgType = "fuse-fd"
	// msgFUSEServed (parent → child): the FUSE server answers; go on.
	msgFUSEServed msgType = "fuse-served"
	// msgPTY (child → parent, with the pty master).
	msgPTY msgType = "pty"
	// msgError (child → parent): the child failed; it exits after sending.
	msgError msgType = "error"
	// msgAbort (parent → child): a hook failed; exit quietly.
	msgAbort msgType = "abort"
)

// message is one handshake message; it fits one SOCK_SEQPACKET datagram.
type message struct {
	Type  msgType `json:"type"`
	Stage string  `json:"stage,omitempty"`
	Error string  `json:"error,omitempty"`
	// Code is the exit status the error maps to (125, 126, 127).
	Code int `json:"code,omitempty"`
}

// maxMsg bounds one datagram: an error message with a long path fits easily.
const maxMsg = 64 << 10

// channel is one end of the handshake socketpair.
type channel struct{ f *os.File }

func (c channel) send(m message, fd *os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	if err := unix.Sendmsg(int(c.f.Fd()), b, oob, nil, 0); err != nil {
		return fmt.Errorf("sending %s message: %w", m.Type, err)
	}
	return nil
}

// recv returns the next message, and the descriptor attached to it. At the
// end of the stream (the peer exec'd or exited) it returns io.EOF.
func (c channel) recv() (message, *os.File, error) {
	buf := make([]byte, maxMsg)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(int(c.f.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return message{}, nil, fmt.Errorf("reading handshake: %w", err)
		}
		if n == 0 && oobn == 0 {
			return message{}, nil, io.EOF
		}
		var fd *os.File
		if oobn > 0 {
			cms, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return message{}, nil, fmt.Errorf("reading handshake descriptors: %w", err)
			}
			for _, cm := range cms {
				fds, err := unix.ParseUnixRights(&cm)
				if err != nil {
					continue
				}
				for i, f := range fds {
					if i == 0 && fd == nil {
						fd = os.NewFile(uintptr(f), "handshake-fd")
					} else {
						unix.Close(f)
					}
				}
			}
		}
		var m message
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			if fd != nil {
				fd.Close()
			}
			return message{}, nil, fmt.Errorf("bad handshake message %q: %w", buf[:n], err)
		}
		return m, fd, nil
	}
}

// expect reads the next message and checks its type.
func (c channel) expect(t msgType) error {
	m, fd, err := c.recv()
	if fd != nil {
		fd.Close()
	}
	if err != nil {
		return err
	}
	if m.Type == msgAbort {
		return errAborted
	}
	if m.Type != t {
		return fmt.Errorf("handshake: got %q, want %q", m.Type, t)
	}
	return nil
}

var errAborted = errors.New("aborted by the parent")
