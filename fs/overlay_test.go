package fs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/internal/testenv"
)

// TestOverlayOnTop uses a dabba-fs mount as the lower layer of kernel
// overlayfs, as a container's writable rootfs does: writes land in the
// upper directory and never touch the layers.
func TestOverlayOnTop(t *testing.T) {
	testenv.RequireRoot(t)
	im := mountImage(t, Options{}, conformanceLayers()...)
	sums := map[string][32]byte{}
	for _, p := range im.paths {
		b, _ := os.ReadFile(p)
		sums[p] = sha256.Sum256(b)
	}
	d := t.TempDir()
	upper, work, mnt := filepath.Join(d, "upper"), filepath.Join(d, "work"), filepath.Join(d, "mnt")
	for _, p := range []string{upper, work, mnt} {
		os.Mkdir(p, 0o755)
	}
	if err := unix.Mount("overlay", mnt, "overlay", 0, "lowerdir="+im.dir+",upperdir="+upper+",workdir="+work); err != nil {
		testenv.Missing(t, "kernel overlayfs over FUSE: "+err.Error(), "load the overlay module")
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	p := func(s string) string { return filepath.Join(mnt, s) }
	if err := os.WriteFile(p("created"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("etc/passwd"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p("replaced")); err != nil {
		t.Fatal(err)
	}
	// Renaming a lower directory needs redirect_dir, which overlayfs
	// refuses with userxattr (rootless): rename(2) gives EXDEV, and mv
	// copies instead.
	if err := os.Rename(p("usr/bin"), p("usr/bin2")); err != nil && !errors.Is(err, unix.EXDEV) {
		t.Errorf("renaming a lower directory: %v, want success or EXDEV", err)
	}
	if err := os.Rename(p("etc/passwd"), p("etc/passwd.new")); err != nil {
		t.Errorf("renaming a copied-up file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(upper, "etc/passwd.new")); string(b) != "changed" {
		t.Errorf("upper etc/passwd: %q", b)
	}
	if _, err := os.Stat(filepath.Join(upper, "created")); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(p("replaced")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("deleted lower file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(im.dir, "etc/passwd")); !bytes.Contains(b, []byte("/bin/ash")) {
		t.Errorf("the image changed: %q", b)
	}
	for _, path := range im.paths {
		b, _ := os.ReadFile(path)
		if sha256.Sum256(b) != sums[path] {
			t.Errorf("layer file %s changed", path)
		}
	}
}
