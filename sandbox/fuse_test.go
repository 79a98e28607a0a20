package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dabba/dabba/internal/testenv"
)

// loopbackServer serves a directory over FUSE: a real file system standing
// in for dabba-fs, to exercise the RootfsFUSE hand-over.
type loopbackServer struct {
	dir    string
	served chan error
}

func (l *loopbackServer) Serve(ctx context.Context, dev *os.File) (func() error, error) {
	root, err := fs.NewLoopbackRoot(l.dir)
	if err != nil {
		return nil, err
	}
	sec := time.Hour
	srv, err := fuse.NewServer(fs.NewNodeFS(root, &fs.Options{EntryTimeout: &sec, AttrTimeout: &sec}),
		fmt.Sprintf("/dev/fd/%d", dev.Fd()), &fuse.MountOptions{FsName: "loopback", MaxWrite: 1 << 20})
	if err != nil {
		return nil, err
	}
	l.served = make(chan error, 1)
	go func() {
		srv.Serve()
		dev.Close()
		l.served <- nil
	}()
	return func() error {
		select {
		case <-l.served:
			return nil
		case <-time.After(10 * time.Second):
			return fmt.Errorf("FUSE server still running after the container exited")
		}
	}, nil
}

// TestRunFUSE runs a container whose root is a FUSE mount made inside its
// namespaces and served by the parent, with overlayfs on top.
func TestRunFUSE(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: runs containers (-short)")
	}
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Missing(t, "/dev/fuse missing", "load the fuse module, or run `make deps` as root")
	}
	lower := busyboxRoot(t)
	up := t.TempDir()
	upper, work := filepath.Join(up, "upper"), filepath.Join(up, "work")
	os.Mkdir(upper, 0o755)
	os.Mkdir(work, 0o755)
	srv := &loopbackServer{dir: lower}
	var out bytes.Buffer
	cfg := &Config{
		Rootfs:     Rootfs{Type: RootfsFUSE, Upper: upper, Work: work},
		FUSE:       srv,
		Args:       []string{"sh", "-c", "grep ' / ' /proc/self/mountinfo | grep -c overlay; grep -c fuse.dabba-fs /proc/self/mountinfo; echo new > /written; cat /written"},
		Env:        []string{"PATH=/bin"},
		Stdout:     &out,
		Stderr:     &out,
		RuntimeDir: t.TempDir(),
	}
	st, err := Run(context.Background(), cfg)
	if err != nil || st != 0 {
		t.Fatalf("status %d, err %v, output %q", st, err, out.String())
	}
	// The root is the overlay; the FUSE mount was detached with the old root.
	if got := strings.Fields(out.String()); len(got) != 3 || got[0] != "1" || got[2] != "new" {
		t.Fatalf("output %q", out.String())
	}
	if b, err := os.ReadFile(filepath.Join(upper, "written")); err != nil || string(b) != "new\n" {
		t.Fatalf("the write did not land in the upper dir: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(lower, "written")); err == nil {
		t.Fatal("the write reached the FUSE lower layer")
	}
}
