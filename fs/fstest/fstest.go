// Package fstest is a conformance suite for root filesystems: it describes
// a directory tree (names, types, modes, owners, sizes, link targets,
// device numbers, xattrs, content hashes, mtimes, hard-link identity and
// link counts) and compares two descriptions. The same checks run against
// every way of producing a rootfs: a dabba-fs mount, the overlay fallback,
// and a reference extraction as root.
//
//	want, _ := fstest.FromTree(tree, src)   // or fstest.Snapshot(refDir)
//	got, _ := fstest.Snapshot(mountDir)
//	for _, d := range fstest.Compare(got, want, fstest.Options{}) { t.Error(d) }
package fstest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/layers"
)

// Entry describes one name of a tree.
type Entry struct {
	Path     string // relative, "." for the root
	Mode     uint32 // st_mode: type and permission bits
	UID, GID uint32
	Size     int64 // regular files and symlinks
	Nlink    uint32
	Mtime    int64 // nanoseconds since the epoch
	Link     string
	Rdev     uint64 // character and block devices, as unix.Mkdev
	Xattrs   map[string]string
	SHA256   string // regular files: hex of the content's hash
	// First is the smallest path naming the same inode: equal Firsts
	// mean hard links to one file.
	First string
}

// Tree is a description of a directory tree by path.
type Tree map[string]*Entry

// ReaderAt reads a layer's uncompressed tar stream (fs.LayerReader).
type ReaderAt interface {
	ReadAt(layer int, p []byte, off int64) (int, error)
}

// FromTree describes what a merged tree should look like once served,
// reading regular files' contents from src.
func FromTree(t *layers.Tree, src ReaderAt) (Tree, error) {
	out := Tree{}
	first := map[*layers.Node]string{}
	err := t.Walk(func(p string, n *layers.Node) error {
		e := &Entry{Path: p, Mode: n.StatMode(), UID: n.UID, GID: n.GID, Nlink: n.Nlink,
			Mtime: n.Mtime, Xattrs: n.Xattrs}
		switch n.Type {
		case layers.TypeReg:
			e.Size = n.Size
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(readerAt{src, int(n.Layer)}, n.Offset, n.Size)); err != nil {
				return fmt.Errorf("reading %s from layer %d: %w", p, n.Layer, err)
			}
			e.SHA256 = hex.EncodeToString(h.Sum(nil))
		case layers.TypeSymlink:
			e.Link = n.Linkname
			e.Size = int64(len(n.Linkname))
		case layers.TypeChar, layers.TypeBlock:
			e.Rdev = unix.Mkdev(n.Devmajor, n.Devminor)
		}
		if len(e.Xattrs) == 0 {
			e.Xattrs = nil
		}
		if f, ok := first[n]; ok {
			e.First = f // Walk visits paths in sorted order: the first is smallest
		} else {
			first[n] = p
			e.First = p
		}
		out[p] = e
		return nil
	})
	return out, err
}

type readerAt struct {
	r     ReaderAt
	layer int
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) { return r.r.ReadAt(r.layer, p, off) }

// Snapshot describes the tree below dir, reading every file.
func Snapshot(dir string) (Tree, error) {
	out := Tree{}
	type key struct{ dev, ino uint64 }
	first := map[key]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		e := &Entry{Path: rel, Mode: st.Mode, UID: st.Uid, GID: st.Gid, Nlink: uint32(st.Nlink),
			Mtime: st.Mtim.Nano()}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Size = st.Size
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			h := sha256.New()
			n, err := io.Copy(h, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("reading %s: %w", path, err)
			}
			if n != st.Size {
				return fmt.Errorf("reading %s: %d bytes, stat says %d", path, n, st.Size)
			}
			e.SHA256 = hex.EncodeToString(h.Sum(nil))
		case unix.S_IFLNK:
			e.Size = st.Size
			if e.Link, err = os.Readlink(path); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Rdev = st.Rdev
		}
		if e.Xattrs, err = xattrs(path); err != nil {
			return err
		}
		k := key{st.Dev, st.Ino}
		if f, ok := first[k]; ok && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			e.First = f
		} else {
			first[k] = rel
			e.First = rel
		}
		out[rel] = e
		return nil
	})
	return out, err
}

func xattrs(path string) (map[string]string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(path, buf)
	if errors.Is(err, unix.ERANGE) {
		sz, _ := unix.Llistxattr(path, nil)
		buf = make([]byte, sz)
		n, err = unix.Llistxattr(path, buf)
	}
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENOSYS) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing xattrs of %s: %w", path, err)
	}
	var m map[string]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 256)
		vn, err := unix.Lgetxattr(path, name, v)
		if errors.Is(err, unix.ERANGE) {
			sz, _ := unix.Lgetxattr(path, name, nil)
			v = make([]byte, sz)
			vn, err = unix.Lgetxattr(path, name, v)
		}
		if err != nil {
			return nil, fmt.Errorf("reading xattr %s of %s: %w", name, path, err)
		}
		if m == nil {
			m = map[string]string{}
		}
		m[name] = string(v[:vn])
	}
	return m, nil
}

// Options relax Compare where two ways of producing a rootfs may
// legitimately differ.
type Options struct {
	// IgnoreDirNlink skips directories' link counts (overlayfs reports 1
	// for merged directories).
	IgnoreDirNlink bool
	// IgnoreMtime skips modification times.
	IgnoreMtime bool
	// IgnoreDirMtime skips directories' modification times only.
	IgnoreDirMtime bool
	// IgnoreXattr says which extended attributes are not compared; nil
	// ignores security.selinux and POSIX ACLs (system.*).
	IgnoreXattr func(name string) bool
	// IDs maps the wanted owners before comparing (e.g. a shift).
	IDs func(uid, gid uint32) (uint32, uint32)
}

// Compare returns one line per difference between got and want, sorted by
// path; none means they agree.
func Compare(got, want Tree, o Options) []string {
	ignoreX := o.IgnoreXattr
	if ignoreX == nil {
		ignoreX = func(n string) bool { return n == "security.selinux" || strings.HasPrefix(n, "system.") }
	}
	var diffs []string
	add := func(p, f string, args ...any) {
		diffs = append(diffs, fmt.Sprintf("%s: "+f, append([]any{p}, args...)...))
	}
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			add(p, "missing (want mode %o)", w.Mode)
			continue
		}
		isDir := w.Mode&unix.S_IFMT == unix.S_IFDIR
		if g.Mode != w.Mode {
			add(p, "mode %o, want %o", g.Mode, w.Mode)
			continue
		}
		wu, wg := w.UID, w.GID
		if o.IDs != nil {
			wu, wg = o.IDs(wu, wg)
		}
		if g.UID != wu || g.GID != wg {
			add(p, "owner %d:%d, want %d:%d", g.UID, g.GID, wu, wg)
		}
		if !isDir && g.Size != w.Size {
			add(p, "size %d, want %d", g.Size, w.Size)
		}
		if g.SHA256 != w.SHA256 {
			add(p, "content sha256 %.12s, want %.12s", g.SHA256, w.SHA256)
		}
		if g.Link != w.Link {
			add(p, "link target %q, want %q", g.Link, w.Link)
		}
		if g.Rdev != w.Rdev {
			add(p, "device %d:%d, want %d:%d", unix.Major(g.Rdev), unix.Minor(g.Rdev), unix.Major(w.Rdev), unix.Minor(w.Rdev))
		}
		if !(isDir && o.IgnoreDirNlink) && g.Nlink != w.Nlink {
			add(p, "nlink %d, want %d", g.Nlink, w.Nlink)
		}
		if !o.IgnoreMtime && !(isDir && o.IgnoreDirMtime) && g.Mtime != w.Mtime {
			add(p, "mtime %d, want %d", g.Mtime, w.Mtime)
		}
		if g.First != w.First {
			add(p, "same file as %q, want as %q", g.First, w.First)
		}
		gx, wx := filterX(g.Xattrs, ignoreX), filterX(w.Xattrs, ignoreX)
		if fmt.Sprint(gx) != fmt.Sprint(wx) {
			add(p, "xattrs %q, want %q", gx, wx)
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			add(p, "unexpected (mode %o)", g.Mode)
		}
	}
	sort.Strings(diffs)
	return diffs
}

func filterX(m map[string]string, ignore func(string) bool) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if !ignore(k) {
			out[k] = v
		}
	}
	return out
}
