package layers

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path"
	"strings"
	"time"
)

// nameMax is the longest path component Linux accepts (NAME_MAX).
const nameMax = 255

// pathMax is the longest entry path accepted (PATH_MAX less its NUL). It
// also bounds the depth of a tree, which a hostile 1 MiB PAX path would
// otherwise make hundreds of thousands of directories deep.
const pathMax = 4095

// xattrPAXPrefix begins the PAX records that carry extended attributes.
const xattrPAXPrefix = "SCHILY.xattr."

// Reader reads the entries of one layer's uncompressed tar stream, checking
// and normalising each one (see Entry), and knows the offset of each regular
// file's content in the stream.
type Reader struct {
	layer string
	cr    countingReader
	tr    *tar.Reader
	err   error
}

// NewReader returns a Reader of the uncompressed tar stream r. layer (the
// layer's digest) names the layer in errors.
func NewReader(r io.Reader, layer string) *Reader {
	rd := &Reader{layer: layer}
	rd.cr.r = r
	rd.tr = tar.NewReader(&rd.cr)
	return rd
}

// countingReader counts the bytes archive/tar consumes. archive/tar reads
// headers in whole 512-byte blocks and data straight from its reader (it
// only seeks when the reader is an io.Seeker, which this is not), so the
// count when Next returns is the offset of the entry's content.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Next returns the next entry, or io.EOF at the end of the archive. A bad
// entry gives an *EntryError; a corrupt or truncated archive an error
// wrapping ErrCorrupt. After an error, Next keeps returning it.
func (r *Reader) Next() (*Entry, error) {
	if r.err != nil {
		return nil, r.err
	}
	for {
		hdr, err := r.tr.Next()
		if err == io.EOF {
			r.err = io.EOF
			return nil, io.EOF
		}
		if err != nil {
			r.err = layerError(r.layer, corrupt("reading tar header", err))
			return nil, r.err
		}
		e, skip, err := convertHeader(hdr, r.cr.n)
		if err != nil {
			r.err = &EntryError{Layer: r.layer, Entry: hdr.Name, Err: err}
			return nil, r.err
		}
		if skip {
			slog.Debug("skipping tar entry", "stage", "layers", "layer", r.layer, "entry", hdr.Name)
			continue
		}
		return e, nil
	}
}

// Read reads the content of the current regular file.
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.tr.Read(p)
	if err != nil && err != io.EOF {
		err = layerError(r.layer, corrupt("reading tar content", err))
	}
	return n, err
}

// Offset returns the number of bytes of the tar stream consumed so far.
func (r *Reader) Offset() int64 { return r.cr.n }

// drain reads the stream to its end (past the tar end blocks), so that a
// digest computed by the caller over r sees every byte, and returns the
// stream's total size.
func (r *Reader) drain() (int64, error) {
	if _, err := io.Copy(io.Discard, &r.cr); err != nil {
		return r.cr.n, layerError(r.layer, corrupt("reading end of tar", err))
	}
	return r.cr.n, nil
}

func corrupt(what string, err error) error {
	if errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrCorrupt, what, err)
}

// CleanPath returns name cleaned and relative ("." for the root), with
// leading slashes stripped as Docker does. A path leaving the root through
// ".." gives ErrPathEscapes; an empty path, a NUL byte, a path longer than
// 4095 bytes or a component longer than 255 bytes gives ErrInvalidPath.
func CleanPath(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidPath)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL byte", ErrInvalidPath)
	}
	if len(name) > pathMax {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrInvalidPath, pathMax)
	}
	c := path.Clean("./" + strings.TrimLeft(name, "/"))
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", ErrPathEscapes
	}
	for rest := c; rest != ""; {
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		if len(comp) > nameMax {
			return "", fmt.Errorf("%w: component longer than %d bytes", ErrInvalidPath, nameMax)
		}
	}
	return c, nil
}

// convertHeader checks hdr and turns it into an Entry. skip is set for
// entries that carry nothing for the filesystem (global PAX headers, AUFS
// whiteout metadata).
func convertHeader(hdr *tar.Header, offset int64) (e *Entry, skip bool, err error) {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil, true, nil
	}
	p, err := CleanPath(hdr.Name)
	if err != nil {
		return nil, false, err
	}
	// Whiteout names: only the last component may be one; AUFS metadata
	// directories (.wh..wh.plnk and the like) are skipped with all they hold.
	dir, base := path.Split(p)
	for rest := strings.TrimSuffix(dir, "/"); rest != ""; {
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		if strings.HasPrefix(comp, WhiteoutMetaPrefix) {
			return nil, true, nil
		}
		if strings.HasPrefix(comp, WhiteoutPrefix) {
			return nil, false, fmt.Errorf("%w: whiteout name %q used as a directory", ErrInvalidPath, comp)
		}
	}
	dir = cleanDir(dir)

	e = &Entry{Path: p}
	if hdr.Uid < 0 || hdr.Uid > math.MaxUint32 || hdr.Gid < 0 || hdr.Gid > math.MaxUint32 {
		return nil, false, fmt.Errorf("%w: uid %d gid %d", ErrBadHeader, hdr.Uid, hdr.Gid)
	}
	if hdr.Devmajor < 0 || hdr.Devmajor > math.MaxUint32 || hdr.Devminor < 0 || hdr.Devminor > math.MaxUint32 {
		return nil, false, fmt.Errorf("%w: device %d,%d", ErrBadHeader, hdr.Devmajor, hdr.Devminor)
	}
	e.UID, e.GID = uint32(hdr.Uid), uint32(hdr.Gid)
	e.Mode = uint32(hdr.Mode & modeSet)
	e.ModTime = unixNano(hdr.ModTime)
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return nil, false, fmt.Errorf("%w: sparse file", ErrUnsupported)
		}
		if name, ok := strings.CutPrefix(k, xattrPAXPrefix); ok {
			if name == "" || strings.IndexByte(name, 0) >= 0 {
				return nil, false, fmt.Errorf("%w: xattr name %q", ErrBadHeader, name)
			}
			if isOverlayXattr(name) {
				// Would steer kernel overlayfs (opaque, redirect,
				// metacopy) when this layer is a lower layer: never kept.
				continue
			}
			if e.Xattrs == nil {
				e.Xattrs = make(map[string]string)
			}
			e.Xattrs[name] = v
		}
	}

	if strings.HasPrefix(base, WhiteoutPrefix) {
		if hdr.Typeflag == tar.TypeDir {
			return nil, false, fmt.Errorf("%w: whiteout is a directory", ErrBadWhiteout)
		}
		if hdr.Size != 0 && (hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA) {
			return nil, false, fmt.Errorf("%w: whiteout has %d bytes of content", ErrBadWhiteout, hdr.Size)
		}
		switch {
		case base == WhiteoutOpaque:
			e.Type, e.Path = TypeOpaque, dir
		case strings.HasPrefix(base, WhiteoutMetaPrefix):
			return nil, true, nil
		default:
			target := base[len(WhiteoutPrefix):]
			if target == "" || target == "." || target == ".." {
				return nil, false, fmt.Errorf("%w: whiteout of %q", ErrBadWhiteout, target)
			}
			e.Type, e.Path = TypeWhiteout, path.Join(dir, target)
		}
		e.Mode, e.UID, e.GID, e.Xattrs = 0, 0, 0, nil
		return e, false, nil
	}

	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		if hdr.Size < 0 || hdr.Size > MaxEntrySize {
			return nil, false, fmt.Errorf("%w: %d bytes", ErrBadSize, hdr.Size)
		}
		e.Type, e.Size, e.Offset = TypeReg, hdr.Size, offset
	case tar.TypeDir:
		e.Type = TypeDir
	case tar.TypeSymlink:
		if hdr.Linkname == "" || strings.IndexByte(hdr.Linkname, 0) >= 0 || len(hdr.Linkname) > 4095 {
			return nil, false, fmt.Errorf("%w: symlink target %q", ErrInvalidPath, hdr.Linkname)
		}
		e.Type, e.Linkname = TypeSymlink, hdr.Linkname
	case tar.TypeLink:
		t, err := CleanPath(hdr.Linkname)
		if err != nil {
			return nil, false, fmt.Errorf("%w: target %q: %w", ErrBadLink, hdr.Linkname, err)
		}
		if t == "." || hasWhiteoutComponent(t) {
			return nil, false, fmt.Errorf("%w: target %q", ErrBadLink, hdr.Linkname)
		}
		e.Type, e.Linkname = TypeHardlink, t
	case tar.TypeChar, tar.TypeBlock:
		e.Type = TypeChar
		if hdr.Typeflag == tar.TypeBlock {
			e.Type = TypeBlock
		}
		e.Devmajor, e.Devminor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
	case tar.TypeFifo:
		e.Type = TypeFifo
	case tar.TypeGNUSparse:
		return nil, false, fmt.Errorf("%w: sparse file", ErrUnsupported)
	default:
		return nil, false, fmt.Errorf("%w: tar type flag %q", ErrUnsupported, hdr.Typeflag)
	}
	if p == "." && e.Type != TypeDir {
		return nil, false, fmt.Errorf("%w: the root must be a directory, not %s", ErrInvalidPath, e.Type)
	}
	return e, false, nil
}

func hasWhiteoutComponent(p string) bool {
	for rest := p; rest != ""; {
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		if strings.HasPrefix(comp, WhiteoutPrefix) {
			return true
		}
	}
	return false
}

// cleanDir turns the directory part of path.Split into a clean path.
func cleanDir(dir string) string {
	if dir == "" {
		return "."
	}
	return strings.TrimSuffix(dir, "/")
}

// unixNano is t in nanoseconds since the epoch, saturated to int64.
func unixNano(t time.Time) int64 {
	const maxSec = math.MaxInt64/1_000_000_000 - 1
	s := t.Unix()
	switch {
	case s > maxSec:
		return math.MaxInt64
	case s < -maxSec:
		return math.MinInt64
	}
	return s*1e9 + int64(t.Nanosecond())
}

// isOverlayXattr reports xattrs that kernel overlayfs interprets on its
// layers (trusted.overlay.* as root, user.overlay.* with userxattr).
func isOverlayXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}
