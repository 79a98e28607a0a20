// Package layertest builds layer tarballs in code, for tests of this and
// other packages:
//
//	b := layertest.Tar(
//		layertest.Dir("etc"),
//		layertest.File("etc/passwd", "root:x:0:0::/root:/bin/sh\n", layertest.Mode(0o600)),
//		layertest.Whiteout("var/cache"),
//		layertest.Opaque("usr/share"),
//	)
//	gz := layertest.Gzip(b)
//
// Entries are written in the order given, with a fixed default mtime so the
// output is deterministic. The helpers panic on errors: they are for tests.
package layertest

import (
	"archive/tar"
	"bytes"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// DefaultMtime is the modification time of entries without the Mtime option.
var DefaultMtime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// Entry is one tar entry to write. Build it with File, Dir, Symlink, ...
type Entry struct {
	Header  tar.Header
	Content []byte
}

// Option changes an Entry.
type Option func(*Entry)

// Mode sets the permission bits (including setuid, setgid, sticky: 07777).
func Mode(m int64) Option { return func(e *Entry) { e.Header.Mode = m } }

// Owner sets the uid and gid.
func Owner(uid, gid int) Option {
	return func(e *Entry) { e.Header.Uid, e.Header.Gid = uid, gid }
}

// Mtime sets the modification time.
func Mtime(t time.Time) Option { return func(e *Entry) { e.Header.ModTime = t } }

// Xattr adds an extended attribute (a PAX SCHILY.xattr record).
func Xattr(name, value string) Option {
	return func(e *Entry) {
		if e.Header.PAXRecords == nil {
			e.Header.PAXRecords = map[string]string{}
		}
		e.Header.PAXRecords["SCHILY.xattr."+name] = value
		e.Header.Format = tar.FormatPAX
	}
}

// Header lets a test change any header field (for hostile entries).
func Header(f func(*tar.Header)) Option { return func(e *Entry) { f(&e.Header) } }

func entry(typ byte, name string, mode int64, content []byte, opts []Option) Entry {
	e := Entry{
		Header: tar.Header{
			Typeflag: typ,
			Name:     name,
			Mode:     mode,
			Size:     int64(len(content)),
			ModTime:  DefaultMtime,
		},
		Content: content,
	}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// File is a regular file (mode 0644).
func File(name, content string, opts ...Option) Entry {
	return entry(tar.TypeReg, name, 0o644, []byte(content), opts)
}

// Dir is a directory (mode 0755). A trailing "/" is added to the name.
func Dir(name string, opts ...Option) Entry {
	if !strings.HasSuffix(name, "/") {
		name += "/"
	}
	return entry(tar.TypeDir, name, 0o755, nil, opts)
}

// Symlink is a symbolic link to target.
func Symlink(name, target string, opts ...Option) Entry {
	e := entry(tar.TypeSymlink, name, 0o777, nil, opts)
	e.Header.Linkname = target
	return e
}

// Hardlink is a hard link to the entry named target.
func Hardlink(name, target string, opts ...Option) Entry {
	e := entry(tar.TypeLink, name, 0o644, nil, opts)
	e.Header.Linkname = target
	return e
}

// Char is a character device.
func Char(name string, major, minor int64, opts ...Option) Entry {
	e := entry(tar.TypeChar, name, 0o666, nil, opts)
	e.Header.Devmajor, e.Header.Devminor = major, minor
	return e
}

// Block is a block device.
func Block(name string, major, minor int64, opts ...Option) Entry {
	e := entry(tar.TypeBlock, name, 0o660, nil, opts)
	e.Header.Devmajor, e.Header.Devminor = major, minor
	return e
}

// Fifo is a named pipe.
func Fifo(name string, opts ...Option) Entry {
	return entry(tar.TypeFifo, name, 0o644, nil, opts)
}

// Whiteout deletes name from the layers below: it is the empty file
// "dir/.wh.base" for name "dir/base".
func Whiteout(name string, opts ...Option) Entry {
	dir, base := path.Split(strings.TrimSuffix(name, "/"))
	return entry(tar.TypeReg, dir+".wh."+base, 0o644, nil, opts)
}

// Opaque hides everything the layers below have in dir: it is the empty
// file "dir/.wh..wh..opq". Use "" or "." for the root.
func Opaque(dir string, opts ...Option) Entry {
	dir = strings.TrimSuffix(dir, "/")
	name := ".wh..wh..opq"
	if dir != "" && dir != "." {
		name = dir + "/" + name
	}
	return entry(tar.TypeReg, name, 0o644, nil, opts)
}

// Raw is an entry with the given header and content, written as is (Size
// is not adjusted).
func Raw(hdr tar.Header, content []byte) Entry { return Entry{Header: hdr, Content: content} }

// Tar returns the tar archive of entries, in order.
func Tar(entries ...Entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		if err := tw.WriteHeader(&h); err != nil {
			panic("layertest: header " + h.Name + ": " + err.Error())
		}
		if len(e.Content) > 0 {
			if _, err := tw.Write(e.Content); err != nil {
				panic("layertest: content " + h.Name + ": " + err.Error())
			}
		}
	}
	if err := tw.Close(); err != nil {
		panic("layertest: " + err.Error())
	}
	return buf.Bytes()
}

// Gzip compresses b with gzip.
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Zstd compresses b with zstd.
func Zstd(b []byte) []byte {
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}
