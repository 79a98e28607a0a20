package fs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupBinaries()
	os.Exit(code)
}

// image is a test image: its layers as tar files, its merged tree, and
// (once mounted) its mount.
type image struct {
	dir   string // mount point
	paths []string
	tree  *layers.Tree
	src   *TarFiles
	fs    *FS
	srv   *Server

	mu   sync.Mutex
	errs []error // through Options.OnError
}

// writeLayers writes tars as files in a temporary directory.
func writeLayers(t testing.TB, tars ...[]byte) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i, b := range tars {
		p := filepath.Join(dir, fmt.Sprintf("layer%d.tar", i))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// mergeFiles indexes and merges layer tar files.
func mergeFiles(t testing.TB, paths []string) *layers.Tree {
	t.Helper()
	var ixs []*layers.Index
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		ix, err := layers.IndexLayer(f, fmt.Sprintf("layer%d", i))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		ixs = append(ixs, ix)
	}
	tree, err := layers.Merge(ixs)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// newImage builds the filesystem of the layers tars (not mounted).
func newImage(t testing.TB, opts Options, tars ...[]byte) *image {
	t.Helper()
	im := &image{paths: writeLayers(t, tars...)}
	im.tree = mergeFiles(t, im.paths)
	var err error
	im.src, err = OpenTarFiles(im.paths, TarFilesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.src.Close() })
	opts.OnError = func(err error) {
		im.mu.Lock()
		im.errs = append(im.errs, err)
		im.mu.Unlock()
	}
	im.fs, err = New(im.tree, im.src, opts)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// mountImage builds and mounts the image of tars; it is unmounted when the
// test ends.
func mountImage(t testing.TB, opts Options, tars ...[]byte) *image {
	t.Helper()
	testenv.RequireFUSE(t)
	im := newImage(t, opts, tars...)
	im.mount(t)
	return im
}

func (im *image) mount(t testing.TB) {
	t.Helper()
	im.dir = t.TempDir()
	srv, err := Mount(im.dir, im.fs, MountOptions{Name: "dabba-test", Debug: os.Getenv("DABBA_FUSE_DEBUG") != ""})
	if err != nil {
		t.Fatal(err)
	}
	im.srv = srv
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			syscall.Unmount(im.dir, syscall.MNT_DETACH)
		}
	})
}

func (im *image) errors() string {
	im.mu.Lock()
	defer im.mu.Unlock()
	var s []string
	for _, e := range im.errs {
		s = append(s, e.Error())
	}
	return strings.Join(s, "\n")
}

// content makes n bytes of varied, incompressible-enough data.
func content(n int, seed byte) string {
	var b bytes.Buffer
	x := uint32(seed) + 1
	for b.Len() < n {
		x = x*1664525 + 1013904223
		b.WriteByte(byte(x >> 24))
	}
	return b.String()
}

type layersNode = layers.Node

// pollHack tells the kernel, through a raw poll(2), that the server does
// not support POLL, before this process, which serves the mount itself,
// opens files there with package os: Go registers opened files with its
// netpoller, and the epoll_ctl would send a POLL request that may find no
// thread left to answer it, hanging the process in D state. go-fuse's
// WaitMount does this for the mounts it makes; a server of a passed
// descriptor does not know the mount point, and a process that does not
// read its own mount (dabba, dabba-fs) does not need it.
func pollHack(t testing.TB, file string) {
	t.Helper()
	fd, err := unix.Open(file, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
	unix.Close(fd)
}
