package layers

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Opaque-directory xattrs of kernel overlayfs.
const (
	// OpaqueXattrUser marks an opaque directory for overlayfs mounted with
	// "userxattr" (in a user namespace).
	OpaqueXattrUser = "user.overlay.opaque"
	// OpaqueXattrTrusted marks an opaque directory for overlayfs mounted by
	// real root without a user namespace.
	OpaqueXattrTrusted = "trusted.overlay.opaque"
)

// ExtractOptions are the options of Extract.
type ExtractOptions struct {
	// Layer is the layer's digest, named in errors.
	Layer string
	// OpaqueXattr is the xattr set to "y" on opaque directories;
	// OpaqueXattrUser when empty.
	OpaqueXattr string
	// IgnoreChownErrors goes on when lchown fails (an id outside the user
	// namespace's map); the file keeps the extracting user's ids, and its
	// setuid and setgid bits are dropped and reported to OnSkip.
	IgnoreChownErrors bool
	// SkipDevices goes on when a character or block device cannot be
	// created (EPERM, as in a user namespace), reporting it to OnSkip.
	SkipDevices bool
	// OnSkip, if set, is told of each entry or attribute not extracted as
	// the layer says (a skipped device, dropped setuid bits). Refused
	// xattrs are only logged at debug level.
	OnSkip func(path string, reason error)
}

// Extract writes one layer into the directory dir in the format of a kernel
// overlayfs lower layer: whiteouts become 0/0 character devices and opaque
// directories get the OpaqueXattr xattr. r is the layer blob, compressed or
// not (see Decompress); it is read to its end.
//
// dir must exist and should be empty: hard links may only point to files of
// this layer. The caller extracts into a temporary directory and renames it.
// Nothing is ever resolved through a symlink, neither one of the layer nor
// one on disk: every path is opened component by component below dir with
// O_NOFOLLOW (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS when the kernel
// has it), and a non-directory found where a directory is needed is
// replaced by a directory, as in the merged view.
//
// Ownership is set with lchown (run it in a user namespace for mapped ids),
// then modes including setuid, setgid and sticky, then xattrs, then mtimes;
// directories get their modes and mtimes last, deepest first.
func Extract(dir string, r io.Reader, opts ExtractOptions) error {
	rc, _, err := Decompress(r)
	if err != nil {
		return layerError(opts.Layer, err)
	}
	defer rc.Close()
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return layerError(opts.Layer, fmt.Errorf("opening extraction directory %s: %w", dir, err))
	}
	x := &extractor{
		opts:   opts,
		root:   root,
		cached: -1,
		dirs:   make(map[string]*Entry),
		buf:    make([]byte, 256<<10),
	}
	if x.opts.OpaqueXattr == "" {
		x.opts.OpaqueXattr = OpaqueXattrUser
	}
	defer x.close()
	tr := NewReader(rc, opts.Layer)
	for {
		e, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := x.entry(e, tr); err != nil {
			if errors.Is(err, ErrCorrupt) {
				return err
			}
			return &EntryError{Layer: opts.Layer, Entry: e.Path, Err: err}
		}
	}
	if _, err := tr.drain(); err != nil {
		return err
	}
	return x.finishDirs()
}

type extractor struct {
	opts ExtractOptions
	root int
	// cached is an open descriptor of the directory cachedPath (tar
	// archives list a directory's files together), or -1.
	cached     int
	cachedPath string
	noOpenat2  bool
	// dirs holds the entries of directories (and "" → implicit ones
	// created on the way) whose mode and mtime are set at the end.
	dirs map[string]*Entry
	buf  []byte
	cur  string // path of the entry being extracted
}

func (x *extractor) close() {
	x.dropCache()
	unix.Close(x.root)
}

func (x *extractor) dropCache() {
	if x.cached >= 0 {
		unix.Close(x.cached)
	}
	x.cached, x.cachedPath = -1, ""
}

// implicitDir is the metadata of directories created because an entry
// needed them: the same as Merge gives them.
var implicitDir = Entry{Type: TypeDir, Mode: 0o755}

func (x *extractor) entry(e *Entry, tr *Reader) error {
	x.cur = e.Path
	if e.Path == "." {
		switch e.Type {
		case TypeDir:
			x.dirs["."] = e
			return x.setOwnerXattrs(x.root, "", e)
		case TypeOpaque:
			return x.setOpaque(x.root)
		}
		return nil
	}
	if e.Type == TypeOpaque {
		fd, err := x.dir(e.Path)
		if err != nil {
			return err
		}
		return x.setOpaque(fd)
	}
	dir, name := splitPath(e.Path)
	pfd, err := x.dir(dir)
	if err != nil {
		return err
	}
	switch e.Type {
	case TypeReg:
		return x.file(pfd, name, e, tr)
	case TypeDir:
		return x.mkdir(pfd, name, e)
	case TypeSymlink:
		if err := x.create(pfd, name, func() error { return unix.Symlinkat(e.Linkname, pfd, name) }); err != nil {
			return fmt.Errorf("creating symlink: %w", err)
		}
		return x.finishNode(pfd, name, e)
	case TypeHardlink:
		return x.link(pfd, name, e)
	case TypeChar, TypeBlock, TypeFifo:
		mode := StatMode(e.Type, 0)
		dev := int(unix.Mkdev(e.Devmajor, e.Devminor))
		err := x.create(pfd, name, func() error { return unix.Mknodat(pfd, name, mode, dev) })
		if err != nil && e.Type != TypeFifo && x.opts.SkipDevices && errors.Is(err, unix.EPERM) {
			x.skip(e.Path, fmt.Errorf("%s device %d,%d not created: %w", e.Type, e.Devmajor, e.Devminor, err))
			return nil
		}
		if err != nil {
			return fmt.Errorf("creating %s: %w", e.Type, err)
		}
		return x.finishNode(pfd, name, e)
	case TypeWhiteout:
		if err := x.create(pfd, name, func() error { return unix.Mknodat(pfd, name, unix.S_IFCHR, 0) }); err != nil {
			return fmt.Errorf("creating whiteout device: %w", err)
		}
		return nil
	}
	return fmt.Errorf("%w: %s", ErrUnsupported, e.Type)
}

func (x *extractor) skip(p string, reason error) {
	slog.Debug("entry not extracted as is", "stage", "extract", "layer", x.opts.Layer, "entry", p, "reason", reason)
	if x.opts.OnSkip != nil {
		x.opts.OnSkip(p, reason)
	}
}

// create runs mk, which creates name in pfd; if name exists it is removed
// (a directory with all it holds) and mk runs again.
func (x *extractor) create(pfd int, name string, mk func() error) error {
	err := mk()
	if !errors.Is(err, unix.EEXIST) {
		return err
	}
	if err := x.remove(pfd, name, x.cur); err != nil {
		return err
	}
	return mk()
}

func (x *extractor) file(pfd int, name string, e *Entry, tr *Reader) error {
	var fd int
	err := x.create(pfd, name, func() (err error) {
		fd, err = unix.Openat(pfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating file: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, tr, x.buf)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return err
		}
		return fmt.Errorf("writing file: %w", err)
	}
	if n != e.Size {
		return fmt.Errorf("%w: file has %d bytes, header says %d", ErrCorrupt, n, e.Size)
	}
	mode, err := x.chown(e, func() error { return unix.Fchown(fd, int(e.UID), int(e.GID)) })
	if err != nil {
		return err
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	x.setXattrs(fd, "", e)
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing file: %w", err)
	}
	return x.setMtime(pfd, name, e.ModTime)
}

// chown sets the owner with do and returns the mode to set afterwards:
// without setuid and setgid bits when the owner could not be set.
func (x *extractor) chown(e *Entry, do func() error) (uint32, error) {
	mode := e.Mode & modeSet
	err := do()
	if err == nil {
		return mode, nil
	}
	if !x.opts.IgnoreChownErrors {
		return 0, fmt.Errorf("lchown %d:%d: %w (run in a user namespace that maps these ids, or ignore chown errors)", e.UID, e.GID, err)
	}
	if mode&0o6000 != 0 {
		x.skip(e.Path, fmt.Errorf("setuid/setgid bits dropped: lchown %d:%d: %w", e.UID, e.GID, err))
		mode &^= 0o6000
	}
	return mode, nil
}

func (x *extractor) mkdir(pfd int, name string, e *Entry) error {
	err := unix.Mkdirat(pfd, name, 0o700)
	if errors.Is(err, unix.EEXIST) {
		var st unix.Stat_t
		if err = unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				err = nil // a directory over a directory: keep it, new metadata
			} else {
				err = x.create(pfd, name, func() error { return unix.Mkdirat(pfd, name, 0o700) })
			}
		}
	}
	if err != nil {
		return fmt.Errorf("creating directory: %w", err)
	}
	x.dirs[e.Path] = e
	return x.setOwnerXattrs(pfd, name, e)
}

// setOwnerXattrs sets owner and xattrs of directory name in pfd (pfd itself
// when name is empty); the mode comes at the end.
func (x *extractor) setOwnerXattrs(pfd int, name string, e *Entry) error {
	fd := pfd
	if name != "" {
		var err error
		fd, err = unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening directory: %w", err)
		}
		defer unix.Close(fd)
	}
	mode, err := x.chown(e, func() error { return unix.Fchown(fd, int(e.UID), int(e.GID)) })
	if err != nil {
		return err
	}
	if mode != e.Mode {
		c := *e
		c.Mode = mode
		x.dirs[e.Path] = &c
	}
	x.setXattrs(fd, "", e)
	return nil
}

// finishNode sets owner, mode, xattrs and mtime of a symlink, device or
// fifo, none of which is opened.
func (x *extractor) finishNode(pfd int, name string, e *Entry) error {
	mode, err := x.chown(e, func() error { return unix.Fchownat(pfd, name, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW) })
	if err != nil {
		return err
	}
	if e.Type != TypeSymlink {
		// fchmodat follows a final symlink, but name is the node just
		// created in a directory nothing else writes to.
		if err := unix.Fchmodat(pfd, name, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	x.setXattrs(pfd, name, e)
	return x.setMtime(pfd, name, e.ModTime)
}

func (x *extractor) link(pfd int, name string, e *Entry) error {
	if e.Linkname == e.Path {
		return nil
	}
	tdir, tname := splitPath(e.Linkname)
	tfd, err := x.resolve(tdir)
	if err != nil {
		return fmt.Errorf("%w: target %q not found in this layer: %w", ErrBadLink, e.Linkname, err)
	}
	defer unix.Close(tfd)
	err = x.create(pfd, name, func() error { return unix.Linkat(tfd, tname, pfd, name, 0) })
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%w: target %q not found in this layer or a directory: %w", ErrBadLink, e.Linkname, err)
		}
		return fmt.Errorf("creating hard link: %w", err)
	}
	return nil
}

func (x *extractor) setOpaque(fd int) error {
	if err := unix.Fsetxattr(fd, x.opts.OpaqueXattr, []byte("y"), 0); err != nil {
		return fmt.Errorf("marking directory opaque with xattr %s: %w (the filesystem must support it)", x.opts.OpaqueXattr, err)
	}
	return nil
}

// setXattrs sets e's xattrs on fd, or, when name is not empty, on name in
// directory fd without following it. Refused xattrs are logged.
func (x *extractor) setXattrs(fd int, name string, e *Entry) {
	if len(e.Xattrs) == 0 {
		return
	}
	keys := make([]string, 0, len(e.Xattrs))
	for k := range e.Xattrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var err error
		if name == "" {
			err = unix.Fsetxattr(fd, k, []byte(e.Xattrs[k]), 0)
		} else {
			// /proc/self/fd/N is the directory itself; the final name is
			// not followed by lsetxattr.
			err = unix.Lsetxattr("/proc/self/fd/"+strconv.Itoa(fd)+"/"+name, k, []byte(e.Xattrs[k]), 0)
		}
		if err != nil {
			slog.Debug("xattr refused", "stage", "extract", "layer", x.opts.Layer, "entry", e.Path, "xattr", k, "err", err)
		}
	}
}

func (x *extractor) setMtime(pfd int, name string, ns int64) error {
	ts := unix.NsecToTimespec(ns)
	if err := unix.UtimesNanoAt(pfd, name, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting mtime: %w", err)
	}
	return nil
}

// dir returns a descriptor of directory p below the root, creating missing
// directories and replacing non-directories on the way. The descriptor
// belongs to the cache: do not close it.
func (x *extractor) dir(p string) (int, error) {
	if p == "." {
		return x.root, nil
	}
	if x.cached >= 0 && x.cachedPath == p {
		return x.cached, nil
	}
	x.dropCache()
	fd, err := x.openBeneath(p)
	if err != nil {
		fd, err = x.walk(p, true)
		if err != nil {
			return -1, err
		}
	}
	x.cached, x.cachedPath = fd, p
	return fd, nil
}

// resolve opens existing directory p below the root, creating nothing. The
// caller closes the descriptor.
func (x *extractor) resolve(p string) (int, error) {
	if p == "." {
		return unix.Dup(x.root)
	}
	if fd, err := x.openBeneath(p); err == nil {
		return fd, nil
	}
	return x.walk(p, false)
}

// openBeneath opens directory p with openat2, refusing any symlink.
func (x *extractor) openBeneath(p string) (int, error) {
	if x.noOpenat2 {
		return -1, unix.ENOSYS
	}
	fd, err := unix.Openat2(x.root, p, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		x.noOpenat2 = true // old kernel, or a seccomp filter
	}
	return fd, err
}

// walk opens p one component at a time with O_NOFOLLOW. With create set,
// missing directories are created and a non-directory in the way (a file, a
// symlink) is replaced by a directory.
func (x *extractor) walk(p string, create bool) (int, error) {
	fd, err := unix.Dup(x.root)
	if err != nil {
		return -1, err
	}
	done := ""
	for rest := p; rest != ""; {
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		done = path.Join(done, comp)
		nfd, err := unix.Openat(fd, comp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil && create {
			switch {
			case errors.Is(err, unix.ENOENT):
				err = unix.Mkdirat(fd, comp, 0o700)
			case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
				if err = x.remove(fd, comp, done); err == nil {
					err = unix.Mkdirat(fd, comp, 0o700)
				}
			}
			if err == nil {
				if _, ok := x.dirs[done]; !ok {
					x.dirs[done] = &implicitDir
				}
				err = unix.Fchownat(fd, comp, 0, 0, unix.AT_SYMLINK_NOFOLLOW)
				if err != nil && x.opts.IgnoreChownErrors {
					err = nil
				}
			}
			if err == nil {
				nfd, err = unix.Openat(fd, comp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("opening directory %q: %w", done, err)
		}
		fd = nfd
	}
	return fd, nil
}

// remove removes name (path full below the root) from directory pfd, a
// directory with everything in it, without following symlinks.
func (x *extractor) remove(pfd int, name, full string) error {
	err := unix.Unlinkat(pfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("removing %q: %w", name, err)
	}
	// A directory: the cached descriptor may be inside it, and the
	// deferred metadata of what it held is void.
	if x.cachedPath == full || strings.HasPrefix(x.cachedPath, full+"/") {
		x.dropCache()
	}
	for p := range x.dirs {
		if p == full || strings.HasPrefix(p, full+"/") {
			delete(x.dirs, p)
		}
	}
	if err := removeTree(pfd, name); err != nil {
		return fmt.Errorf("removing directory %q: %w", name, err)
	}
	return nil
}

func removeTree(pfd int, name string) error {
	fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	names, err := f.Readdirnames(-1)
	if err != nil {
		f.Close()
		return err
	}
	for _, n := range names {
		err := unix.Unlinkat(fd, n, 0)
		if errors.Is(err, unix.EISDIR) {
			err = removeTree(fd, n)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			f.Close()
			return err
		}
	}
	f.Close()
	return unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR)
}

// finishDirs sets the modes and mtimes of directories, deepest first, once
// nothing more is written in them.
func (x *extractor) finishDirs() error {
	x.dropCache()
	paths := make([]string, 0, len(x.dirs))
	for p := range x.dirs {
		paths = append(paths, p)
	}
	// Deepest first and the root last, so no directory is closed to us
	// before what it holds is done.
	depth := func(p string) int {
		if p == "." {
			return -1
		}
		return strings.Count(p, "/")
	}
	sort.Slice(paths, func(i, j int) bool {
		if di, dj := depth(paths[i]), depth(paths[j]); di != dj {
			return di > dj
		}
		return paths[i] < paths[j]
	})
	for _, p := range paths {
		e := x.dirs[p]
		fd, err := x.resolve(p)
		if err != nil {
			continue // replaced by a non-directory later in the layer
		}
		err = unix.Fchmod(fd, e.Mode&modeSet)
		if err == nil {
			ts := unix.NsecToTimespec(e.ModTime)
			err = unix.UtimesNanoAt(fd, "", []unix.Timespec{ts, ts}, unix.AT_EMPTY_PATH)
		}
		unix.Close(fd)
		if err != nil {
			return &EntryError{Layer: x.opts.Layer, Entry: p, Err: fmt.Errorf("setting directory mode and mtime: %w", err)}
		}
	}
	return nil
}
