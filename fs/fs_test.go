package fs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/fs/fstest"
	"github.com/dabba/dabba/internal/testenv"
	lt "github.com/dabba/dabba/layers/layertest"
)

// capability is a security.capability value (VFS_CAP_REVISION_2,
// cap_net_raw effective and permitted), as setcap writes it.
const capability = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

var longName = strings.Repeat("long-name-", 12) + "end"

// conformanceLayers is a two-layer image with every kind of entry and
// every way a layer changes the one below.
func conformanceLayers() [][]byte {
	base := lt.Tar(
		lt.Dir("etc"),
		lt.File("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
		lt.File("etc/shadow", "root:*:::::::\n", lt.Mode(0o640), lt.Owner(0, 42)),
		lt.Dir("usr/bin"),
		lt.File("usr/bin/prog", "#!/bin/sh\necho prog\n", lt.Mode(0o4755)),
		lt.Hardlink("usr/bin/prog2", "usr/bin/prog"),
		lt.File("usr/bin/ping", "ping", lt.Mode(0o755), lt.Xattr("security.capability", capability)),
		lt.Symlink("bin", "usr/bin"),
		lt.Symlink("dangling", "/nowhere/at/all"),
		lt.Dir("var/cache"),
		lt.File("var/cache/a", "a"),
		lt.File("var/cache/b", "b"),
		lt.Dir("opq"),
		lt.File("opq/old1", "old"),
		lt.Dir("opq/sub"),
		lt.File("opq/sub/x", "x"),
		lt.Dir("gone-dir"),
		lt.File("gone-dir/f", "f"),
		lt.File("replaced", "old content"),
		lt.File("replaced-type", "a file, then a directory"),
		lt.Dir("dev"),
		lt.Char("dev/null", 1, 3),
		lt.Block("dev/sda", 8, 0),
		lt.Char("dev/bigminor", 300, 70000),
		lt.Dir("run"),
		lt.Fifo("run/fifo"),
		lt.File("user-file", "owned by 1000", lt.Owner(1000, 1000), lt.Mtime(time.Unix(1234567890, 0))),
		lt.File("xattrs", "x", lt.Xattr("user.one", "1"), lt.Xattr("user.two", "two\x00bytes")),
		lt.File("empty", ""),
		lt.File("big", content(300<<10, 1)),
		lt.Dir("sticky", lt.Mode(0o1777)),
		lt.File("setgid", "g", lt.Mode(0o2711)),
		lt.File("dir/"+longName, "long"),
	)
	upper := lt.Tar(
		lt.Whiteout("var/cache/a"),
		lt.Whiteout("gone-dir"),
		lt.Opaque("opq"),
		lt.File("opq/new", "new"),
		lt.File("replaced", "new content", lt.Mode(0o600)),
		lt.Dir("replaced-type"),
		lt.File("replaced-type/inner", "inner"),
		lt.File("etc/passwd", "root:x:0:0::/root:/bin/ash\n"),
		lt.Hardlink("etc/passwd-link", "etc/passwd"),
		lt.File("big2", content(1<<20+12345, 2)),
	)
	return [][]byte{base, upper}
}

// TestConformance runs the conformance suite over a mount of the image,
// as root: it reads files only their owners may read.
func TestConformance(t *testing.T) {
	testenv.RequireRoot(t)
	im := mountImage(t, Options{}, conformanceLayers()...)
	want, err := fstest.FromTree(im.tree, im.src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := fstest.Snapshot(im.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range fstest.Compare(got, want, fstest.Options{}) {
		t.Error(d)
	}
	// What the merge must have done, checked on the mount itself.
	for _, p := range []string{"var/cache/a", "gone-dir", "opq/old1", "opq/sub"} {
		if _, err := os.Lstat(filepath.Join(im.dir, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: want it deleted by the upper layer, got %v", p, err)
		}
	}
	for p, w := range map[string]string{
		"var/cache/b": "b", "opq/new": "new", "replaced": "new content",
		"replaced-type/inner": "inner", "etc/passwd-link": "root:x:0:0::/root:/bin/ash\n",
		"bin/prog": "#!/bin/sh\necho prog\n", "dir/" + longName: "long",
	} {
		b, err := os.ReadFile(filepath.Join(im.dir, p))
		if err != nil || string(b) != w {
			t.Errorf("%s: read %q, %v; want %q", p, b, err, w)
		}
	}
	for p, e := range got {
		if strings.Contains(p, ".wh.") {
			t.Errorf("%s: a whiteout name is visible", p)
		}
		_ = e
	}
	var a, b unix.Stat_t
	unix.Lstat(filepath.Join(im.dir, "usr/bin/prog"), &a)
	unix.Lstat(filepath.Join(im.dir, "usr/bin/prog2"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 || a.Mode != unix.S_IFREG|0o4755 {
		t.Errorf("hard link: inodes %d and %d, nlink %d, mode %o; want one inode, nlink 2, mode 104755", a.Ino, b.Ino, a.Nlink, a.Mode)
	}
	unix.Lstat(filepath.Join(im.dir, "dev/bigminor"), &a)
	if unix.Major(a.Rdev) != 300 || unix.Minor(a.Rdev) != 70000 || a.Mode&unix.S_IFMT != unix.S_IFCHR {
		t.Errorf("dev/bigminor: mode %o device %d:%d, want a character device 300:70000", a.Mode, unix.Major(a.Rdev), unix.Minor(a.Rdev))
	}
	if n, err := im.fs.Errors(); n != 0 {
		t.Errorf("%d errors while serving: %v", n, err)
	}
}

// TestStableInodes checks that inode numbers are the tree's, so two mounts
// of one image agree.
func TestStableInodes(t *testing.T) {
	im := mountImage(t, Options{}, conformanceLayers()...)
	err := im.tree.Walk(func(p string, n *layersNode) error {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(im.dir, p), &st); err != nil {
			return err
		}
		if st.Ino != n.Ino {
			t.Errorf("%s: inode %d, want %d", p, st.Ino, n.Ino)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestReadOnly(t *testing.T) {
	im := mountImage(t, Options{}, conformanceLayers()...)
	p := func(s string) string { return filepath.Join(im.dir, s) }
	for name, op := range map[string]func() error{
		"create":   func() error { return os.WriteFile(p("new"), nil, 0o644) },
		"write":    func() error { return os.WriteFile(p("replaced"), []byte("x"), 0o644) },
		"remove":   func() error { return os.Remove(p("replaced")) },
		"rmdir":    func() error { return os.Remove(p("sticky")) },
		"mkdir":    func() error { return os.Mkdir(p("d"), 0o755) },
		"rename":   func() error { return os.Rename(p("replaced"), p("r2")) },
		"chmod":    func() error { return os.Chmod(p("replaced"), 0o777) },
		"chown":    func() error { return os.Lchown(p("replaced"), 1, 1) },
		"symlink":  func() error { return os.Symlink("x", p("s")) },
		"link":     func() error { return os.Link(p("replaced"), p("l")) },
		"setxattr": func() error { return unix.Setxattr(p("replaced"), "user.x", []byte("1"), 0) },
		"truncate": func() error { return os.Truncate(p("replaced"), 0) },
		"mknod":    func() error { return unix.Mknod(p("fifo2"), unix.S_IFIFO|0o644, 0) },
	} {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
}

func TestXattrs(t *testing.T) {
	im := mountImage(t, Options{}, conformanceLayers()...)
	p := filepath.Join(im.dir, "xattrs")
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(p, "user.two", buf)
	if err != nil || string(buf[:n]) != "two\x00bytes" {
		t.Errorf("user.two: %q, %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(p, "user.none", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("missing xattr: %v, want ENODATA", err)
	}
	if _, err := unix.Lgetxattr(p, "user.two", buf[:3]); !errors.Is(err, unix.ERANGE) {
		t.Errorf("small buffer: %v, want ERANGE", err)
	}
	if sz, err := unix.Lgetxattr(p, "user.two", nil); err != nil || sz != 9 {
		t.Errorf("size query: %d, %v; want 9", sz, err)
	}
	n, err = unix.Llistxattr(p, buf)
	if err != nil || string(buf[:n]) != "user.one\x00user.two\x00" {
		t.Errorf("list: %q, %v", buf[:n], err)
	}
}

// TestShift checks Options.IDs: a mount made outside a container's user
// namespace shows owners shifted into the host range it maps.
func TestShift(t *testing.T) {
	testenv.RequireRoot(t) // reads every file
	im := mountImage(t, Options{IDs: Shift(100000, 200000)}, conformanceLayers()...)
	want, err := fstest.FromTree(im.tree, im.src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := fstest.Snapshot(im.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range fstest.Compare(got, want, fstest.Options{IDs: Shift(100000, 200000)}) {
		t.Error(d)
	}
	var st unix.Stat_t
	unix.Lstat(filepath.Join(im.dir, "user-file"), &st)
	if st.Uid != 101000 || st.Gid != 201000 {
		t.Errorf("user-file: owner %d:%d, want 101000:201000", st.Uid, st.Gid)
	}
}

func TestNewRefusesBadTrees(t *testing.T) {
	if _, err := New(emptyTree{}, nil, Options{}); err == nil || !strings.Contains(err.Error(), "inodes") {
		t.Errorf("empty tree: %v", err)
	}
}

type emptyTree struct{}

func (emptyTree) Inode(uint64) *layersNode { return nil }
func (emptyTree) NumInodes() int           { return 0 }
