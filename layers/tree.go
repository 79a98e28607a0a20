package layers

import (
	"errors"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// Node is one file of a merged Tree: an inode. Hard links are several
// directory entries sharing one *Node. Nodes are read-only once Merge
// returns; consumers must not modify them.
//
// The field order packs a Node into 112 bytes.
type Node struct {
	// Ino is the inode number, stable for a given list of layers: the
	// root is 1, then nodes are numbered in Walk order.
	Ino uint64
	// Size is the content size of a regular file (0 for other types; use
	// len(Linkname) for a symlink's st_size).
	Size int64
	// Mtime is the modification time in nanoseconds since the Unix epoch.
	Mtime int64
	// Offset is where a regular file's content starts in the uncompressed
	// tar stream of layer Layer; the content is the Size bytes from there.
	Offset int64
	// Linkname is a symlink's target, as written in the layer.
	Linkname string
	// Xattrs are the extended attributes; nil when there are none.
	Xattrs map[string]string

	children []Dirent // directories only, sorted by name

	// Mode holds the permission bits with setuid, setgid and sticky
	// (07777). StatMode(Type, Mode) gives st_mode.
	Mode     uint32
	UID, GID uint32
	// Nlink is the number of names of a non-directory, and 2 plus the
	// number of subdirectories for a directory.
	Nlink              uint32
	Devmajor, Devminor uint32
	// Layer is the index, in the slice given to Merge, of the layer this
	// node comes from (for a regular file: the layer holding its bytes).
	Layer int32
	Type  EntryType
}

// Dirent is one name in a directory.
type Dirent struct {
	Name string
	Node *Node
}

// Children returns the entries of directory n sorted by name (nil for
// other types). The slice must not be modified.
func (n *Node) Children() []Dirent { return n.children }

// Child returns the node named name in directory n, or nil.
func (n *Node) Child(name string) *Node {
	c := n.children
	i := sort.Search(len(c), func(i int) bool { return c[i].Name >= name })
	if i < len(c) && c[i].Name == name {
		return c[i].Node
	}
	return nil
}

// StatMode returns the node's stat(2) st_mode (type and permission bits).
func (n *Node) StatMode() uint32 { return StatMode(n.Type, n.Mode) }

// Tree is the merged view of an image's layers: what a container sees,
// whiteouts resolved. Build it with Merge. It is safe for concurrent reads.
type Tree struct {
	// Root is the root directory, inode 1.
	Root *Node
	// Layers are the digests of the merged layers (Index.Layer), bottom
	// first; Node.Layer indexes this slice.
	Layers []string
	inodes []*Node // by Ino-1
	names  int
}

// Lookup returns the node at path p (relative or absolute; cleaned), or
// nil. Symlinks are not followed: a path through a symlink finds nothing.
func (t *Tree) Lookup(p string) *Node {
	p = path.Clean("/" + p)[1:]
	n := t.Root
	for p != "" && n != nil {
		var name string
		name, p, _ = strings.Cut(p, "/")
		n = n.Child(name)
	}
	return n
}

// Inode returns the node with inode number ino, or nil.
func (t *Tree) Inode(ino uint64) *Node {
	if ino == 0 || ino > uint64(len(t.inodes)) {
		return nil
	}
	return t.inodes[ino-1]
}

// NumInodes returns the number of nodes (the highest inode number).
func (t *Tree) NumInodes() int { return len(t.inodes) }

// NumNames returns the number of names in the tree, the root included:
// NumInodes plus the extra names of hard links.
func (t *Tree) NumNames() int { return t.names }

// Walk calls fn for each name in the tree, depth first, a directory before
// its entries, entries sorted by name; the root comes first as ".". Paths
// are relative. A hard-linked node is visited once per name. If fn returns
// fs.SkipDir for a directory, its entries are skipped; any other error
// stops the walk and is returned.
func (t *Tree) Walk(fn func(p string, n *Node) error) error {
	err := walk(".", t.Root, fn)
	if errors.Is(err, fs.SkipDir) {
		return nil
	}
	return err
}

func walk(p string, n *Node, fn func(string, *Node) error) error {
	if err := fn(p, n); err != nil {
		if errors.Is(err, fs.SkipDir) && n.Type == TypeDir {
			return nil
		}
		return err
	}
	for _, d := range n.children {
		cp := d.Name
		if p != "." {
			cp = p + "/" + d.Name
		}
		if err := walk(cp, d.Node, fn); err != nil {
			return err
		}
	}
	return nil
}
