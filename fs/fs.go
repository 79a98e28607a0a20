package fs

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dabba/dabba/layers"
)

// Tree is the merged view fs serves: the nodes of an image numbered from 1
// (the root directory) to NumInodes. *layers.Tree satisfies it. Nodes must
// not change while the filesystem is mounted.
type Tree interface {
	// Inode returns the node numbered ino, or nil.
	Inode(ino uint64) *layers.Node
	// NumInodes returns the highest inode number.
	NumInodes() int
}

// LayerReader gives the bytes of a layer's uncompressed tar stream: off is
// an offset in the stream of layer number layer (Node.Layer), as the
// layer's index recorded it. It reads len(p) bytes or returns an error, as
// io.ReaderAt does. An implementation must never return wrong bytes: data
// it cannot vouch for (truncated, corrupt) is an error. It is called
// concurrently.
type LayerReader interface {
	ReadAt(layer int, p []byte, off int64) (int, error)
}

// Options tune a filesystem. The zero value is usable.
type Options struct {
	// IDs maps an owner as stored in the image to the owner the server
	// reports to the kernel. Nil reports the image's ids unchanged, which
	// is right for a mount made inside the container's user namespace:
	// the kernel interprets the ids a FUSE server reports in the user
	// namespace of the process that mounted it (see the package doc).
	// Use Shift for a mount made outside it.
	IDs func(uid, gid uint32) (uint32, uint32)
	// Timeout is how long the kernel may cache names, attributes and
	// negative lookups; the image never changes. 0 means DefaultTimeout.
	Timeout time.Duration
	// OnError receives each error met while serving (a failed read of a
	// layer); the reader sees EIO. Nil logs with slog at error level.
	// It is called concurrently.
	OnError func(error)
	// PushAhead writes the contents of the next files into the kernel's
	// page cache while a reader reads the tree in order (see push.go).
	// Only for a LayerReader whose bytes are local: a push reads files
	// nobody asked for yet.
	PushAhead bool
}

// DefaultTimeout is the entry and attribute timeout given to the kernel
// when Options.Timeout is 0: an hour, as an image never changes.
const DefaultTimeout = time.Hour

// Shift returns an Options.IDs function adding uidOffset and gidOffset to
// every owner, for a mount made in the initial user namespace and used by
// a container whose user namespace maps its id 0 to host id uidOffset
// (and so on, contiguously).
func Shift(uidOffset, gidOffset uint32) func(uid, gid uint32) (uint32, uint32) {
	return func(uid, gid uint32) (uint32, uint32) { return uid + uidOffset, gid + gidOffset }
}

// FS is the read-only filesystem of a merged tree. It implements go-fuse's
// fuse.RawFileSystem directly: the kernel's node ids are the tree's inode
// numbers, so serving needs no memory per node beyond the tree itself (see
// the package doc for why not go-fuse's fs.Inode tree). Create it with New
// and serve it with Mount or Serve.
type FS struct {
	fuse.RawFileSystem // ENOSYS for everything not implemented below

	tree    Tree
	src     LayerReader
	ids     func(uid, gid uint32) (uint32, uint32)
	timeout time.Duration
	onError func(error)

	// parents holds the inode number of each directory's parent (index
	// ino-1; 0 for non-directories), for "..": 4 bytes per node.
	parents []uint32
	blocks  uint64 // st_blocks of all regular files, for statfs
	// xattrs says whether any node has extended attributes; without any,
	// the kernel is told once (ENOSYS) and stops asking at every exec
	// and ls -l.
	xattrs bool

	push *pusher // nil without Options.PushAhead; its server is set by Init

	reads atomic.Int64 // READ requests

	nerrs    atomic.Int64
	errMu    sync.Mutex
	firstErr error
}

// New returns the filesystem of tree, reading file contents from src.
func New(tree Tree, src LayerReader, opts Options) (*FS, error) {
	n := tree.NumInodes()
	if n < 1 || n > 1<<32-1 {
		return nil, fmt.Errorf("merged tree has %d inodes: want 1 to 2^32-1", n)
	}
	root := tree.Inode(1)
	if root == nil || root.Type != layers.TypeDir {
		return nil, errors.New("merged tree has no root directory (inode 1)")
	}
	f := &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		tree:          tree,
		src:           src,
		ids:           opts.IDs,
		timeout:       opts.Timeout,
		onError:       opts.OnError,
		parents:       make([]uint32, n),
	}
	if f.timeout <= 0 {
		f.timeout = DefaultTimeout
	}
	if opts.PushAhead {
		f.push = &pusher{f: f}
	}
	// Number the parents of directories, checking that every child is a
	// node of the tree (a Tree built otherwise than by layers.Merge).
	f.parents[0] = 1
	seen := make([]bool, n)
	var walk func(d *layers.Node) error
	walk = func(d *layers.Node) error {
		seen[d.Ino-1] = true
		f.xattrs = f.xattrs || len(d.Xattrs) > 0
		for _, e := range d.Children() {
			c := e.Node
			f.xattrs = f.xattrs || len(c.Xattrs) > 0
			if c == nil || c.Ino == 0 || c.Ino > uint64(n) || tree.Inode(c.Ino) != c {
				return fmt.Errorf("merged tree: entry %q of directory inode %d is not a node of the tree", e.Name, d.Ino)
			}
			if c.Type == layers.TypeDir {
				if seen[c.Ino-1] {
					return fmt.Errorf("merged tree: directory inode %d has two names", c.Ino)
				}
				f.parents[c.Ino-1] = uint32(d.Ino)
				if err := walk(c); err != nil {
					return err
				}
				continue
			}
			if !seen[c.Ino-1] {
				seen[c.Ino-1] = true
				f.blocks += uint64(c.Size+511) / 512
			}
		}
		return nil
	}
	if err := walk(root); err != nil {
		return nil, err
	}
	return f, nil
}

// Stats are counts of a filesystem's work, for the debug log and tests.
type Stats struct {
	// Reads counts the READ requests the kernel sent: reads of file
	// contents its page cache could not answer.
	Reads int64
	// Pushed counts the bytes pushed into the kernel's page cache ahead
	// of a reader (Options.PushAhead).
	Pushed int64
}

// Stats returns the counts of the work done so far.
func (f *FS) Stats() Stats {
	st := Stats{Reads: f.reads.Load()}
	if p := f.push; p != nil {
		p.mu.Lock()
		st.Pushed = p.pushed
		p.mu.Unlock()
	}
	return st
}

// Errors returns how many errors the filesystem met while serving, and the
// first of them.
func (f *FS) Errors() (int64, error) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return f.nerrs.Load(), f.firstErr
}

// fail records err and returns EIO, the only errno a reader sees for a
// failure of the backing data.
func (f *FS) fail(err error) fuse.Status {
	f.errMu.Lock()
	if f.firstErr == nil {
		f.firstErr = err
	}
	f.nerrs.Add(1)
	f.errMu.Unlock()
	if f.onError != nil {
		f.onError(err)
	} else {
		slog.Error("serving the image", "stage", "fs", "err", err)
	}
	return fuse.EIO
}

// node returns the node the kernel calls id (our inode number).
func (f *FS) node(id uint64) *layers.Node {
	if id == fuse.FUSE_ROOT_ID {
		return f.tree.Inode(1)
	}
	return f.tree.Inode(id)
}

// readContent reads the bytes of regular file n at off into p, all of them
// or an error: a short read of the layer is corruption, not an end.
func (f *FS) readContent(n *layers.Node, p []byte, off int64) error {
	got, err := f.src.ReadAt(int(n.Layer), p, n.Offset+off)
	if got == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readError names the file and the layer of a failed read.
func (f *FS) readError(n *layers.Node, off int64, size int, err error) error {
	layer := fmt.Sprintf("#%d", n.Layer)
	if lt, ok := f.tree.(*layers.Tree); ok && int(n.Layer) < len(lt.Layers) {
		layer = lt.Layers[n.Layer]
	}
	return fmt.Errorf("reading /%s (%d bytes at %d) from layer %s at offset %d: %w (the layer's data is truncated or corrupt: pull the image again)",
		f.pathOf(n), size, off, layer, n.Offset+off, err)
}

// pathOf finds a name of n by walking the tree: only for error messages,
// so the tree needs no parent pointers.
func (f *FS) pathOf(n *layers.Node) string {
	var find func(d *layers.Node, p string) (string, bool)
	find = func(d *layers.Node, p string) (string, bool) {
		for _, e := range d.Children() {
			cp := p + e.Name
			if e.Node == n {
				return cp, true
			}
			if e.Node.Type == layers.TypeDir {
				if r, ok := find(e.Node, cp+"/"); ok {
					return r, true
				}
			}
		}
		return "", false
	}
	if p, ok := find(f.tree.Inode(1), ""); ok {
		return p
	}
	return fmt.Sprintf("(inode %d)", n.Ino)
}
