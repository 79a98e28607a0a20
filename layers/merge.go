package layers

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// Merge merges the indexes of an image's layers, layers[0] at the bottom,
// into the tree a container sees. See the package documentation for the
// rules. An entry that cannot be merged (a hard link to nothing, or to a
// directory) gives an *EntryError naming its layer and path.
func Merge(layers []*Index) (*Tree, error) {
	return merge(layers, true)
}

// merge is Merge, with or without the builder's directory cache (tests
// compare the two).
func merge(layers []*Index, dirCache bool) (*Tree, error) {
	b := &builder{kids: make(map[*Node]map[string]*Node), noDirCache: !dirCache}
	b.root = &Node{Type: TypeDir, Mode: 0o755}
	t := &Tree{Root: b.root, Layers: make([]string, len(layers))}
	for li, ix := range layers {
		t.Layers[li] = ix.Layer
		if err := b.apply(int32(li), ix); err != nil {
			return nil, err
		}
	}
	b.finish(t)
	return t, nil
}

// builder holds the directories' entries as maps while layers are applied;
// finish turns them into sorted slices.
type builder struct {
	root *Node
	kids map[*Node]map[string]*Node
	// The directory ensureDir found last: the entries of a layer come
	// directory by directory, so most find their parent here. Any change
	// that could remove or replace a directory forgets it.
	lastDir    string
	lastNode   *Node
	noDirCache bool
}

func (b *builder) forgetDir() { b.lastDir, b.lastNode = "", nil }

func (b *builder) apply(li int32, ix *Index) error {
	for i := range ix.Entries {
		if err := checkEntry(&ix.Entries[i]); err != nil {
			return &EntryError{Layer: ix.Layer, Entry: ix.Entries[i].Path, Err: err}
		}
	}
	// Whiteouts and opaque markers act on the layers below only, whatever
	// their place in the archive: apply them first.
	for i := range ix.Entries {
		e := &ix.Entries[i]
		switch e.Type {
		case TypeWhiteout:
			dir, name := splitPath(e.Path)
			if d := b.lookupDir(dir); d != nil {
				delete(b.kids[d], name)
				b.forgetDir()
			}
		case TypeOpaque:
			if d := b.lookupDir(e.Path); d != nil {
				delete(b.kids, d)
				b.forgetDir()
			}
		}
	}
	// Then the entries in archive order, a later one replacing an earlier.
	for i := range ix.Entries {
		e := &ix.Entries[i]
		if e.Path == "." {
			if e.Type == TypeDir {
				setMeta(b.root, e, li)
			}
			continue
		}
		dir, name := splitPath(e.Path)
		var parent *Node
		if e.Type == TypeOpaque {
			// The marker says this layer has the directory.
			b.ensureDir(e.Path, li)
			continue
		}
		parent = b.ensureDir(dir, li)
		m := b.kids[parent]
		switch e.Type {
		case TypeWhiteout:
			// Deletes an earlier entry of this same layer, as a later
			// tar entry would replace it.
			delete(m, name)
			b.forgetDir()
		case TypeDir:
			if old := m[name]; old != nil && old.Type == TypeDir {
				setMeta(old, e, li) // a directory over a directory merges
				continue
			}
			n := &Node{}
			setMeta(n, e, li)
			b.set(parent, name, n)
		case TypeHardlink:
			target := b.lookup(e.Linkname)
			if target == nil {
				return &EntryError{Layer: ix.Layer, Entry: e.Path,
					Err: fmt.Errorf("%w: target %q does not exist", ErrBadLink, e.Linkname)}
			}
			if target.Type == TypeDir {
				return &EntryError{Layer: ix.Layer, Entry: e.Path,
					Err: fmt.Errorf("%w: target %q is a directory", ErrBadLink, e.Linkname)}
			}
			b.set(parent, name, target)
		default:
			n := &Node{}
			setMeta(n, e, li)
			b.set(parent, name, n)
		}
	}
	return nil
}

// checkEntry refuses entries that IndexLayer would not have produced, for
// indexes built by hand or read back from storage.
func checkEntry(e *Entry) error {
	if !isClean(e.Path) {
		// Say why, as IndexLayer would have.
		if _, err := CleanPath(e.Path); err != nil {
			return err
		}
		return fmt.Errorf("%w: not clean", ErrInvalidPath)
	}
	if e.Type < TypeReg || e.Type > TypeOpaque {
		return fmt.Errorf("%w: type %d", ErrUnsupported, e.Type)
	}
	if e.Path != "." && hasWhiteoutComponent(e.Path) {
		return fmt.Errorf("%w: whiteout name in path", ErrInvalidPath)
	}
	if e.Path == "." && e.Type != TypeDir && e.Type != TypeOpaque {
		if e.Type == TypeWhiteout {
			return fmt.Errorf("%w: whiteout of the root", ErrBadWhiteout)
		}
		return fmt.Errorf("%w: the root must be a directory", ErrInvalidPath)
	}
	switch e.Type {
	case TypeReg:
		if e.Size < 0 || e.Size > MaxEntrySize || e.Offset < 0 {
			return fmt.Errorf("%w: %d bytes at %d", ErrBadSize, e.Size, e.Offset)
		}
	case TypeHardlink:
		if c, err := CleanPath(e.Linkname); err != nil || c != e.Linkname || c == "." {
			return fmt.Errorf("%w: target %q", ErrBadLink, e.Linkname)
		}
	}
	return nil
}

// isClean reports whether p is what CleanPath returns for it: "." or
// slash-separated names, none empty, "." or "..", none longer than nameMax,
// no NUL, at most pathMax bytes in all. It allocates nothing, unlike
// CleanPath: Merge checks every entry of every layer at each start.
func isClean(p string) bool {
	if p == "." {
		return true
	}
	if p == "" || len(p) > pathMax {
		return false
	}
	start := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			if p[i] == 0 {
				return false
			}
			continue
		}
		comp := p[start:i]
		if comp == "" || comp == "." || comp == ".." || len(comp) > nameMax {
			return false
		}
		start = i + 1
	}
	return true
}

func setMeta(n *Node, e *Entry, li int32) {
	n.Type = e.Type
	n.Mode = e.Mode & modeSet
	n.UID, n.GID = e.UID, e.GID
	n.Mtime = e.ModTime
	n.Layer = li
	n.Xattrs = e.Xattrs
	n.Devmajor, n.Devminor = e.Devmajor, e.Devminor
	n.Linkname = e.Linkname
	n.Size, n.Offset = 0, 0
	if e.Type == TypeReg {
		n.Size, n.Offset = e.Size, e.Offset
	}
}

func (b *builder) set(parent *Node, name string, n *Node) {
	m := b.kids[parent]
	if m == nil {
		m = make(map[string]*Node)
		b.kids[parent] = m
	}
	if old := m[name]; old != nil && old.Type == TypeDir {
		b.forgetDir() // it may be the last directory, or hold it
	}
	m[name] = n
}

// lookup finds p without following symlinks.
func (b *builder) lookup(p string) *Node {
	n := b.root
	for p != "." && p != "" && n != nil {
		var name string
		name, p, _ = strings.Cut(p, "/")
		if n.Type != TypeDir {
			return nil
		}
		n = b.kids[n][name]
	}
	return n
}

func (b *builder) lookupDir(p string) *Node {
	if n := b.lookup(p); n != nil && n.Type == TypeDir {
		return n
	}
	return nil
}

// ensureDir returns the directory at p, creating it and its parents as
// implicit directories (0755, owned by 0:0, mtime 0) where missing, and
// replacing any non-directory in the way: a path is never resolved through
// a symlink.
func (b *builder) ensureDir(p string, li int32) *Node {
	if b.lastNode != nil && p == b.lastDir && !b.noDirCache {
		return b.lastNode
	}
	full := p
	n := b.root
	defer func() { b.lastDir, b.lastNode = full, n }()
	for p != "." && p != "" {
		var name string
		name, p, _ = strings.Cut(p, "/")
		c := b.kids[n][name]
		if c == nil || c.Type != TypeDir {
			c = &Node{Type: TypeDir, Mode: 0o755, Layer: li}
			b.set(n, name, c)
		}
		n = c
	}
	return n
}

func splitPath(p string) (dir, name string) {
	dir, name = path.Split(p)
	return cleanDir(dir), name
}

// finish numbers the nodes in walk order, counts links and turns the
// directory maps into sorted slices holding copies of the names, so the
// tree keeps nothing of the indexes alive.
func (b *builder) finish(t *Tree) {
	t.inodes = t.inodes[:0]
	var visit func(n *Node)
	visit = func(n *Node) {
		t.names++
		if n.Ino != 0 {
			n.Nlink++ // another name of a hard-linked node
			return
		}
		t.inodes = append(t.inodes, n)
		n.Ino = uint64(len(t.inodes))
		n.Nlink = 1
		n.Linkname = strings.Clone(n.Linkname)
		if n.Xattrs != nil {
			x := make(map[string]string, len(n.Xattrs))
			for k, v := range n.Xattrs {
				x[strings.Clone(k)] = strings.Clone(v)
			}
			n.Xattrs = x
		}
		if n.Type != TypeDir {
			return
		}
		m := b.kids[n]
		n.children = make([]Dirent, 0, len(m))
		for name, c := range m {
			n.children = append(n.children, Dirent{Name: strings.Clone(name), Node: c})
		}
		slices.SortFunc(n.children, func(a, b Dirent) int { return strings.Compare(a.Name, b.Name) })
		if len(n.children) == 0 {
			n.children = nil
		}
		n.Nlink = 2
		for _, d := range n.children {
			if d.Node.Type == TypeDir {
				n.Nlink++
			}
			visit(d.Node)
		}
		delete(b.kids, n)
	}
	visit(b.root)
	// Pre-size exactly: the slice lives as long as the tree.
	t.inodes = append([]*Node(nil), t.inodes...)
}
