package fs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/internal/testenv"
	lt "github.com/dabba/dabba/layers/layertest"
)

// readPrefix reads a file through the mount and checks that whatever it
// got before failing is a prefix of want: a broken layer may stop a read,
// never change its bytes.
func readPrefix(t *testing.T, path, want string) error {
	t.Helper()
	got, err := os.ReadFile(path)
	if !strings.HasPrefix(want, string(got)) {
		t.Errorf("%s: read %d bytes that are not the file's", path, len(got))
	}
	return err
}

func TestTruncatedLayer(t *testing.T) {
	tars := conformanceLayers()
	im := mountImage(t, Options{}, tars...)
	n := im.tree.Lookup("big2")
	if err := os.Truncate(im.paths[1], n.Offset+n.Size/2); err != nil {
		t.Fatal(err)
	}
	err := readPrefix(t, filepath.Join(im.dir, "big2"), content(1<<20+12345, 2))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading big2 from a truncated layer: %v, want EIO", err)
	}
	msg := im.errors()
	for _, w := range []string{"/big2", "layer1", "unexpected EOF", "truncated or corrupt"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error message %q does not mention %q", msg, w)
		}
	}
	// Files before the cut still read.
	if b, err := os.ReadFile(filepath.Join(im.dir, "opq/new")); err != nil || string(b) != "new" {
		t.Errorf("opq/new: %q, %v", b, err)
	}
}

func TestCorruptLayer(t *testing.T) {
	im := mountImage(t, Options{}, conformanceLayers()...)
	n := im.tree.Lookup("big2")
	f, err := os.OpenFile(im.paths[1], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("garbage"), n.Offset+700000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	err = readPrefix(t, filepath.Join(im.dir, "big2"), content(1<<20+12345, 2))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading big2 from a corrupt layer: %v, want EIO", err)
	}
	if msg := im.errors(); !strings.Contains(msg, "checksum mismatch") || !strings.Contains(msg, "/big2") {
		t.Errorf("error message %q should name /big2 and the checksum mismatch", msg)
	}
	if c, first := im.fs.Errors(); c == 0 || !errors.Is(first, ErrCorrupt) {
		t.Errorf("FS.Errors: %d, %v; want ErrCorrupt", c, first)
	}
}

func TestOpenTarFiles(t *testing.T) {
	paths := writeLayers(t, lt.Tar(lt.File("a", "a")))
	_, err := OpenTarFiles(paths, TarFilesOptions{DiffIDs: []string{"sha256:" + strings.Repeat("0", 64)}})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), paths[0]) {
		t.Errorf("wrong diff_id: %v", err)
	}
	if _, err := OpenTarFiles(paths, TarFilesOptions{DiffIDs: []string{}}); err == nil {
		t.Error("diff_id count mismatch accepted")
	}
	if _, err := OpenTarFiles([]string{filepath.Join(t.TempDir(), "nope")}, TarFilesOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	for _, noVerify := range []bool{false, true} {
		src, err := OpenTarFiles(paths, TarFilesOptions{NoVerify: noVerify})
		if err != nil {
			t.Fatal(err)
		}
		tree := mergeFiles(t, paths)
		a := tree.Lookup("a")
		p := make([]byte, 1)
		if n, err := src.ReadAt(0, p, a.Offset); n != 1 || err != nil || p[0] != 'a' {
			t.Errorf("noVerify=%v: read %q, %v", noVerify, p[:n], err)
		}
		if _, err := src.ReadAt(1, p, 0); err == nil {
			t.Errorf("noVerify=%v: layer 1 of 1 read", noVerify)
		}
		if _, err := src.ReadAt(0, p, 1<<30); err == nil {
			t.Errorf("noVerify=%v: read beyond the end", noVerify)
		}
		src.Close()
	}
}

// TestServePassedFD mounts the way a container's init will: this process
// opens /dev/fuse and mounts it with KernelMountArgs, then Serve serves the
// descriptor without knowing the mount point.
func TestServePassedFD(t *testing.T) {
	testenv.RequireFUSE(t)
	testenv.RequireRoot(t)
	im := newImage(t, Options{}, conformanceLayers()...)
	dir := t.TempDir()
	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fstype, flags, data := KernelMountArgs(int(dev.Fd()), 0, 0, MountOptions{AllowOther: true})
	if err := unix.Mount("dabba-test", dir, fstype, flags, data); err != nil {
		dev.Close()
		t.Fatalf("mount(%s, %#x, %s): %v", fstype, flags, data, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	srv, err := Serve(dev, im.fs, MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	pollHack(t, filepath.Join(dir, "etc/passwd"))
	b, err := os.ReadFile(filepath.Join(dir, "etc/passwd"))
	if err != nil || !bytes.Contains(b, []byte("/bin/ash")) {
		t.Errorf("etc/passwd through the passed descriptor: %q, %v", b, err)
	}
	if err := srv.Unmount(); err == nil {
		t.Error("Unmount of a passed descriptor succeeded")
	}
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done: // the kernel ended the session
	case <-time.After(20 * time.Second):
		// Only if a mount namespace created meanwhile, by anyone,
		// copied the mount: the session lasts as long as that copy.
		t.Error("the session did not end 20s after the unmount")
	}
}

// TestDeviceServer is the same through DeviceServer, the shape the sandbox
// takes: stop returns once the mount is gone, and reports read errors.
func TestDeviceServer(t *testing.T) {
	testenv.RequireFUSE(t)
	testenv.RequireRoot(t)
	im := newImage(t, Options{}, conformanceLayers()...)
	dir := t.TempDir()
	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fstype, flags, data := KernelMountArgs(int(dev.Fd()), 0, 0, MountOptions{})
	if err := unix.Mount("dabba-test", dir, fstype, flags, data); err != nil {
		dev.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	ds := &DeviceServer{FS: im.fs}
	stop, err := ds.Serve(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	pollHack(t, filepath.Join(dir, "opq/new"))
	if b, err := os.ReadFile(filepath.Join(dir, "opq/new")); err != nil || string(b) != "new" {
		t.Errorf("opq/new: %q, %v", b, err)
	}
	n := im.tree.Lookup("big")
	os.Truncate(im.paths[0], n.Offset)
	if _, err := os.ReadFile(filepath.Join(dir, "big")); !errors.Is(err, syscall.EIO) {
		t.Errorf("big from a truncated layer: %v", err)
	}
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err == nil || !strings.Contains(err.Error(), "read errors while serving") {
		t.Errorf("stop: %v, want the read error reported", err)
	}
}
