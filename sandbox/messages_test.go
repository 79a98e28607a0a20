package sandbox

import (
	"errors"
	"io"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestHandshakeMessages(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := channel{os.NewFile(uintptr(fds[0]), "a")}, channel{os.NewFile(uintptr(fds[1]), "b")}
	defer a.f.Close()

	// A message with a descriptor attached: the peer gets a working copy.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.send(message{Type: msgPTY}, w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	m, fd, err := b.recv()
	if err != nil || m.Type != msgPTY || fd == nil {
		t.Fatalf("recv = %+v, %v, %v", m, fd, err)
	}
	fd.Write([]byte("via fd"))
	fd.Close()
	got, _ := io.ReadAll(r)
	if string(got) != "via fd" {
		t.Fatalf("read %q through the passed descriptor", got)
	}

	// An error message keeps its fields.
	a.send(message{Type: msgError, Stage: "mount", Error: "no /proc", Code: 125}, nil)
	m, fd, err = b.recv()
	if err != nil || fd != nil || m != (message{Type: msgError, Stage: "mount", Error: "no /proc", Code: 125}) {
		t.Fatalf("recv = %+v, %v, %v", m, fd, err)
	}

	// expect: the wanted type, an abort, another type.
	a.send(message{Type: msgRelease}, nil)
	if err := b.expect(msgRelease); err != nil {
		t.Fatal(err)
	}
	a.send(message{Type: msgAbort}, nil)
	if err := b.expect(msgRelease); !errors.Is(err, errAborted) {
		t.Fatalf("abort: %v", err)
	}
	a.send(message{Type: msgFUSEServed}, nil)
	if err := b.expect(msgRelease); err == nil {
		t.Fatal("wrong type accepted")
	}

	// The peer closing (the child's exec) is EOF.
	a.f.Close()
	if _, _, err := b.recv(); err != io.EOF {
		t.Fatalf("after close: %v, want io.EOF", err)
	}
	b.f.Close()
}
