package images

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Whiteout names, as the OCI image spec defines them.
const (
	whiteoutPrefix = ".wh."
	opaqueName     = ".wh..wh..opq"
)

// TreeDiffOptions tunes TreeDiff.
type TreeDiffOptions struct {
	// Skip lists paths (relative, e.g. "dev") whose contents are left out of
	// the layer; the directory itself is kept.
	Skip []string
}

// TreeDiff writes to w the uncompressed layer tar that turns the tree lower
// into the tree upper: entries new or changed in upper (with their parent
// directories), a whiteout for each name gone from lower, and an opaque
// marker for a directory whose old entries are all gone while it has new
// ones. With lower "" the layer holds all of upper. Hard links within upper
// stay hard links. It returns the bytes written.
func TreeDiff(w io.Writer, lower, upper string, opts TreeDiffOptions) (int64, error) {
	cw := &countWriter{w: w}
	d := &differ{tw: tar.NewWriter(cw), lower: lower, upper: upper, links: map[inode]string{}, skip: map[string]bool{}}
	for _, s := range opts.Skip {
		d.skip[filepath.Clean(s)] = true
	}
	if err := d.dir("", lower != ""); err != nil {
		return cw.n, err
	}
	if err := d.tw.Close(); err != nil {
		return cw.n, err
	}
	return cw.n, nil
}

type inode struct{ dev, ino uint64 }

type differ struct {
	tw           *tar.Writer
	lower, upper string
	links        map[inode]string
	skip         map[string]bool
	pending      []string // directories whose headers wait for a first child
}

// dir compares the directory rel (already known to exist in upper); inLower
// says whether lower has a directory there to compare against.
func (d *differ) dir(rel string, inLower bool) error {
	if d.skip[rel] {
		return nil
	}
	names, err := readNames(filepath.Join(d.upper, rel))
	if err != nil {
		return err
	}
	var oldNames []string
	if inLower {
		if oldNames, err = readNames(filepath.Join(d.lower, rel)); err != nil {
			return err
		}
	}
	inNew := make(map[string]bool, len(names))
	for _, n := range names {
		inNew[n] = true
	}
	if inLower && len(oldNames) > 0 && len(names) > 0 && !anyIn(oldNames, inNew) {
		// Everything below was replaced: hide it all at once.
		if err := d.flush(); err != nil {
			return err
		}
		if err := d.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: join(rel, opaqueName), Mode: 0o644}); err != nil {
			return err
		}
		inLower = false
		oldNames = nil
	}
	inOld := make(map[string]bool, len(oldNames))
	for _, n := range oldNames {
		inOld[n] = true
		if !inNew[n] {
			if err := d.flush(); err != nil {
				return err
			}
			if err := d.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: join(rel, whiteoutPrefix+n), Mode: 0o644}); err != nil {
				return err
			}
		}
	}
	for _, n := range names {
		if err := d.entry(join(rel, n), inOld[n]); err != nil {
			return err
		}
	}
	return nil
}

func anyIn(a []string, b map[string]bool) bool {
	for _, x := range a {
		if b[x] {
			return true
		}
	}
	return false
}

func (d *differ) entry(rel string, inLower bool) error {
	up := filepath.Join(d.upper, rel)
	fi, err := os.Lstat(up)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket != 0 {
		return nil // sockets belong to running programs, not to images
	}
	var old fs.FileInfo
	if inLower {
		if old, err = os.Lstat(filepath.Join(d.lower, rel)); err != nil {
			return err
		}
	}
	if fi.IsDir() {
		sameType := old != nil && old.IsDir()
		if !sameType || !sameMeta(fi, old) {
			if err := d.flush(); err != nil {
				return err
			}
			if err := d.header(rel, fi, ""); err != nil {
				return err
			}
		} else {
			d.pending = append(d.pending, rel)
			defer func() {
				if n := len(d.pending); n > 0 && d.pending[n-1] == rel {
					d.pending = d.pending[:n-1]
				}
			}()
		}
		return d.dir(rel, sameType)
	}
	if old != nil && old.Mode().Type() == fi.Mode().Type() && sameMeta(fi, old) {
		same, err := sameContent(filepath.Join(d.lower, rel), up, fi)
		if err != nil {
			return err
		}
		if same {
			return nil
		}
	}
	if err := d.flush(); err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().IsRegular() && st.Nlink > 1 {
		k := inode{uint64(st.Dev), st.Ino}
		if first, ok := d.links[k]; ok {
			return d.header(rel, fi, first)
		}
		d.links[k] = rel
	}
	return d.header(rel, fi, "")
}

// flush writes the headers of the unchanged directories above the entry
// about to be written, so every entry's parents are in the layer.
func (d *differ) flush() error {
	for _, rel := range d.pending {
		fi, err := os.Lstat(filepath.Join(d.upper, rel))
		if err != nil {
			return err
		}
		if err := d.header(rel, fi, ""); err != nil {
			return err
		}
	}
	d.pending = d.pending[:0]
	return nil
}

func (d *differ) header(rel string, fi fs.FileInfo, linkTo string) error {
	p := filepath.Join(d.upper, rel)
	var target string
	if fi.Mode()&fs.ModeSymlink != 0 {
		t, err := os.Readlink(p)
		if err != nil {
			return err
		}
		target = t
	}
	h, err := tar.FileInfoHeader(fi, target)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	h.Name = rel
	if fi.IsDir() {
		h.Name += "/"
	}
	h.Uid, h.Gid = int(st.Uid), int(st.Gid)
	h.Uname, h.Gname = "", ""
	h.ModTime = fi.ModTime().Truncate(1e9)
	h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
	h.Format = tar.FormatUnknown
	if linkTo != "" {
		h.Typeflag = tar.TypeLink
		h.Linkname = linkTo
		h.Size = 0
		return d.tw.WriteHeader(h)
	}
	if err := d.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if h.Typeflag == tar.TypeReg && h.Size > 0 {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.CopyN(d.tw, f, h.Size); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func sameMeta(a, b fs.FileInfo) bool {
	sa, sb := a.Sys().(*syscall.Stat_t), b.Sys().(*syscall.Stat_t)
	if a.Mode() != b.Mode() || sa.Uid != sb.Uid || sa.Gid != sb.Gid {
		return false
	}
	if a.IsDir() {
		return true // a directory's mtime changes with its entries; those are compared one by one
	}
	return a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && sa.Rdev == sb.Rdev
}

// sameContent compares two entries of the same type and metadata: link
// targets for symlinks, bytes for regular files.
func sameContent(a, b string, fi fs.FileInfo) (bool, error) {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		ta, err1 := os.Readlink(a)
		tb, err2 := os.Readlink(b)
		if err := errors.Join(err1, err2); err != nil {
			return false, err
		}
		return ta == tb, nil
	case fi.Mode().IsRegular():
		ba, err1 := os.ReadFile(a)
		bb, err2 := os.ReadFile(b)
		if err := errors.Join(err1, err2); err != nil {
			return false, err
		}
		return bytes.Equal(ba, bb), nil
	}
	return true, nil
}

func readNames(dir string) ([]string, error) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(es))
	for i, e := range es {
		names[i] = e.Name()
	}
	return names, nil // os.ReadDir sorts by name
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	k, err := c.w.Write(b)
	c.n += int64(k)
	return k, err
}
