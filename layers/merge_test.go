package layers

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/dabba/dabba/layers/layertest"
)

type E = layertest.Entry

var (
	file     = layertest.File
	dir      = layertest.Dir
	symlink  = layertest.Symlink
	hardlink = layertest.Hardlink
	whiteout = layertest.Whiteout
	opaque   = layertest.Opaque
	mode     = layertest.Mode
	owner    = layertest.Owner
)

// mergeTars indexes and merges layers given as entry lists.
func mergeTars(t testing.TB, layers ...[]E) (*Tree, [][]byte, error) {
	t.Helper()
	var ixs []*Index
	var tars [][]byte
	for i, l := range layers {
		b := layertest.Tar(l...)
		tars = append(tars, b)
		ix, err := IndexLayer(bytes.NewReader(b), fmt.Sprintf("sha256:layer%d", i))
		if err != nil {
			t.Fatal(err)
		}
		ixs = append(ixs, ix)
	}
	tree, err := Merge(ixs)
	return tree, tars, err
}

// dump lists the tree, one line per name: path, type, mode, owner, nlink,
// then size and content for files, target for symlinks, and the inode for
// hard-linked nodes.
func dump(t testing.TB, tree *Tree, tars [][]byte) string {
	t.Helper()
	var b strings.Builder
	err := tree.Walk(func(p string, n *Node) error {
		fmt.Fprintf(&b, "%s %s %o %d:%d n%d", p, n.Type, n.Mode, n.UID, n.GID, n.Nlink)
		switch n.Type {
		case TypeReg:
			fmt.Fprintf(&b, " %q", tars[n.Layer][n.Offset:n.Offset+n.Size])
		case TypeSymlink:
			fmt.Fprintf(&b, " ->%s", n.Linkname)
		}
		if n.Type != TypeDir && n.Nlink > 1 {
			fmt.Fprintf(&b, " i%d", n.Ino)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func lines(s ...string) string { return strings.Join(s, "\n") + "\n" }

func TestMerge(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]E
		want   string
	}{
		{"one layer", [][]E{{dir("etc"), file("etc/hosts", "h", mode(0o600), owner(1, 2)), symlink("bin", "usr/bin")}},
			lines(". dir 755 0:0 n3", "bin symlink 777 0:0 n1 ->usr/bin", "etc dir 755 0:0 n2", `etc/hosts reg 600 1:2 n1 "h"`)},
		{"implicit parents", [][]E{{file("a/b/c", "x")}},
			lines(". dir 755 0:0 n3", "a dir 755 0:0 n3", "a/b dir 755 0:0 n2", `a/b/c reg 644 0:0 n1 "x"`)},
		{"implicit parent keeps lower dir", [][]E{{dir("a", mode(0o700), owner(5, 5))}, {file("a/f", "x")}},
			lines(". dir 755 0:0 n3", "a dir 700 5:5 n2", `a/f reg 644 0:0 n1 "x"`)},
		{"root metadata", [][]E{{dir("/", mode(0o700))}, {dir(".", mode(0o750), owner(3, 3))}},
			lines(". dir 750 3:3 n2")},
		{"whiteout file", [][]E{{file("a", "1"), file("b", "2")}, {whiteout("a")}},
			lines(". dir 755 0:0 n2", `b reg 644 0:0 n1 "2"`)},
		{"whiteout dir removes subtree", [][]E{{dir("d"), file("d/x", "1"), dir("d/e"), file("d/e/y", "2")}, {whiteout("d")}},
			lines(". dir 755 0:0 n2")},
		{"whiteout nested", [][]E{{dir("d"), file("d/x", "1"), file("d/y", "2")}, {dir("d"), whiteout("d/x")}},
			lines(". dir 755 0:0 n3", "d dir 755 0:0 n2", `d/y reg 644 0:0 n1 "2"`)},
		{"whiteout of missing is harmless", [][]E{{file("a", "1")}, {whiteout("zz"), whiteout("q/r")}},
			lines(". dir 755 0:0 n3", `a reg 644 0:0 n1 "1"`, "q dir 755 0:0 n2")},
		{"whiteout then recreate in one layer", [][]E{{file("a", "old")}, {whiteout("a"), file("a", "new")}},
			lines(". dir 755 0:0 n2", `a reg 644 0:0 n1 "new"`)},
		{"recreate then whiteout in one layer", [][]E{{file("a", "old")}, {file("a", "new"), whiteout("a")}},
			lines(". dir 755 0:0 n2")},
		{"whiteout after same-layer dir contents", [][]E{{dir("d"), file("d/old", "o")}, {dir("d"), file("d/new", "n"), whiteout("d/old")}},
			lines(". dir 755 0:0 n3", "d dir 755 0:0 n2", `d/new reg 644 0:0 n1 "n"`)},
		{"opaque hides lower keeps same layer", [][]E{
			{dir("d"), file("d/lower", "l"), dir("d/sub"), file("d/sub/x", "x")},
			{dir("d", mode(0o700)), file("d/upper", "u"), opaque("d")}},
			lines(". dir 755 0:0 n3", "d dir 700 0:0 n2", `d/upper reg 644 0:0 n1 "u"`)},
		{"opaque marker first", [][]E{{dir("d"), file("d/lower", "l")}, {opaque("d"), file("d/upper", "u")}},
			lines(". dir 755 0:0 n3", "d dir 755 0:0 n2", `d/upper reg 644 0:0 n1 "u"`)},
		{"opaque root", [][]E{{file("a", "1"), dir("d")}, {opaque(""), file("b", "2")}},
			lines(". dir 755 0:0 n2", `b reg 644 0:0 n1 "2"`)},
		{"opaque over lower file makes a dir", [][]E{{file("d", "f")}, {opaque("d")}},
			lines(". dir 755 0:0 n3", "d dir 755 0:0 n2")},
		{"opaque only hides below, not above", [][]E{{dir("d"), file("d/a", "1")}, {opaque("d")}, {file("d/b", "2")}},
			lines(". dir 755 0:0 n3", "d dir 755 0:0 n2", `d/b reg 644 0:0 n1 "2"`)},
		{"file replaces dir", [][]E{{dir("x"), file("x/in", "1")}, {file("x", "f")}},
			lines(". dir 755 0:0 n2", `x reg 644 0:0 n1 "f"`)},
		{"dir replaces file", [][]E{{file("x", "f")}, {dir("x", mode(0o711)), file("x/in", "1")}},
			lines(". dir 755 0:0 n3", "x dir 711 0:0 n2", `x/in reg 644 0:0 n1 "1"`)},
		{"dir over dir merges", [][]E{{dir("x", mode(0o700), owner(1, 1)), file("x/a", "a")}, {dir("x", mode(0o755), owner(2, 2)), file("x/b", "b")}},
			lines(". dir 755 0:0 n3", "x dir 755 2:2 n2", `x/a reg 644 0:0 n1 "a"`, `x/b reg 644 0:0 n1 "b"`)},
		{"symlink replaces dir", [][]E{{dir("x"), file("x/a", "a")}, {symlink("x", "/tmp")}},
			lines(". dir 755 0:0 n2", "x symlink 777 0:0 n1 ->/tmp")},
		{"symlink parent is never followed", [][]E{{dir("real"), symlink("link", "real")}, {file("link/f", "f")}},
			lines(". dir 755 0:0 n4", "link dir 755 0:0 n2", `link/f reg 644 0:0 n1 "f"`, "real dir 755 0:0 n2")},
		{"duplicate in one layer: last wins", [][]E{{file("a", "first"), file("a", "second", mode(0o600))}},
			lines(". dir 755 0:0 n2", `a reg 600 0:0 n1 "second"`)},
		{"same layer file replaces dir", [][]E{{dir("a"), file("a/b", "b"), file("a", "f")}},
			lines(". dir 755 0:0 n2", `a reg 644 0:0 n1 "f"`)},
		{"hardlink same layer", [][]E{{file("a", "data", mode(0o4755)), hardlink("b", "a"), hardlink("c/d", "/a")}},
			lines(". dir 755 0:0 n3", `a reg 4755 0:0 n3 "data" i2`, `b reg 4755 0:0 n3 "data" i2`, "c dir 755 0:0 n2", `c/d reg 4755 0:0 n3 "data" i2`)},
		{"hardlink to lower layer", [][]E{{file("a", "data")}, {hardlink("b", "a")}},
			lines(". dir 755 0:0 n2", `a reg 644 0:0 n2 "data" i2`, `b reg 644 0:0 n2 "data" i2`)},
		{"hardlink keeps content when target deleted", [][]E{{file("a", "data"), hardlink("b", "a")}, {whiteout("a")}},
			lines(". dir 755 0:0 n2", `b reg 644 0:0 n1 "data"`)},
		{"hardlink keeps content when target replaced", [][]E{{file("a", "old"), hardlink("b", "a")}, {file("a", "new")}},
			lines(". dir 755 0:0 n2", `a reg 644 0:0 n1 "new"`, `b reg 644 0:0 n1 "old"`)},
		{"hardlink to symlink", [][]E{{symlink("s", "/x"), hardlink("h", "s")}},
			lines(". dir 755 0:0 n2", "h symlink 777 0:0 n2 ->/x i2", "s symlink 777 0:0 n2 ->/x i2")},
		{"hardlink to itself", [][]E{{file("a", "x"), hardlink("a", "a")}},
			lines(". dir 755 0:0 n2", `a reg 644 0:0 n1 "x"`)},
		{"hardlink replaced by file", [][]E{{file("a", "x"), hardlink("b", "a")}, {file("b", "y")}},
			lines(". dir 755 0:0 n2", `a reg 644 0:0 n1 "x"`, `b reg 644 0:0 n1 "y"`)},
		{"dir nlink counts subdirs", [][]E{{dir("a"), dir("a/b"), dir("a/c"), file("a/f", ""), symlink("a/l", "b")}},
			lines(". dir 755 0:0 n3", "a dir 755 0:0 n4", "a/b dir 755 0:0 n2", "a/c dir 755 0:0 n2", `a/f reg 644 0:0 n1 ""`, "a/l symlink 777 0:0 n1 ->b")},
		{"devices and fifos", [][]E{{layertest.Char("dev/null", 1, 3), layertest.Fifo("p", mode(0o600))}},
			lines(". dir 755 0:0 n3", "dev dir 755 0:0 n2", "dev/null char 666 0:0 n1", "p fifo 600 0:0 n1")},
		{"no layers", nil, lines(". dir 755 0:0 n2")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree, tars, err := mergeTars(t, tt.layers...)
			if err != nil {
				t.Fatal(err)
			}
			if got := dump(t, tree, tars); got != tt.want {
				t.Errorf("tree:\n%s\nwant:\n%s", got, tt.want)
			}
			checkTree(t, tree)
		})
	}
}

func TestMergeErrors(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]E
		want   error
		msg    string
	}{
		{"hardlink to nothing", [][]E{{file("a", "")}, {hardlink("b", "nope")}}, ErrBadLink,
			`layer sha256:layer1: entry "b": invalid hard link: target "nope" does not exist`},
		{"hardlink to dir", [][]E{{dir("d"), hardlink("b", "d")}}, ErrBadLink, "is a directory"},
		{"hardlink to whited-out", [][]E{{file("a", "")}, {whiteout("a"), hardlink("b", "a")}}, ErrBadLink, "does not exist"},
		{"hardlink through symlink", [][]E{{dir("d"), file("d/f", ""), symlink("s", "d"), hardlink("b", "s/f")}}, ErrBadLink, "does not exist"},
		{"hardlink to later entry", [][]E{{hardlink("b", "a"), file("a", "")}}, ErrBadLink, "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := mergeTars(t, tt.layers...)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var ee *EntryError
			if !errors.As(err, &ee) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q, want an *EntryError containing %q", err, tt.msg)
			}
		})
	}
}

// TestMergeHandBuiltIndex checks that Merge refuses entries IndexLayer
// would never produce, as a stored index could be tampered with.
func TestMergeHandBuiltIndex(t *testing.T) {
	tests := []struct {
		name string
		e    Entry
		want error
	}{
		{"unclean path", Entry{Path: "a/../b", Type: TypeReg}, ErrInvalidPath},
		{"absolute path", Entry{Path: "/a", Type: TypeReg}, ErrInvalidPath},
		{"escaping path", Entry{Path: "../a", Type: TypeReg}, ErrPathEscapes},
		{"whiteout name", Entry{Path: "a/.wh.b", Type: TypeReg}, ErrInvalidPath},
		{"bad type", Entry{Path: "a", Type: 77}, ErrUnsupported},
		{"zero type", Entry{Path: "a"}, ErrUnsupported},
		{"negative size", Entry{Path: "a", Type: TypeReg, Size: -1}, ErrBadSize},
		{"whiteout root", Entry{Path: ".", Type: TypeWhiteout}, ErrBadWhiteout},
		{"root file", Entry{Path: ".", Type: TypeReg}, ErrInvalidPath},
		{"hardlink unclean", Entry{Path: "a", Type: TypeHardlink, Linkname: "../x"}, ErrBadLink},
		{"hardlink root", Entry{Path: "a", Type: TypeHardlink, Linkname: "."}, ErrBadLink},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Merge([]*Index{{Layer: "sha256:x", Entries: []Entry{tt.e}}})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestTreeAPI(t *testing.T) {
	layers := [][]E{
		{dir("etc"), file("etc/passwd", "p"), file("etc/group", "g"), symlink("lnk", "etc"), hardlink("hl", "etc/passwd")},
		{file("etc/motd", "m", layertest.Xattr("user.a", "b")), dir("var")},
	}
	tree, _, err := mergeTars(t, layers...)
	if err != nil {
		t.Fatal(err)
	}
	if tree.Root.Ino != 1 || tree.Inode(1) != tree.Root {
		t.Errorf("root inode %d", tree.Root.Ino)
	}
	for _, p := range []string{"/etc/passwd", "etc/passwd", "./etc//passwd", "/etc/../etc/passwd"} {
		if n := tree.Lookup(p); n == nil || n.Size != 1 {
			t.Errorf("Lookup(%q) = %+v", p, n)
		}
	}
	for _, p := range []string{"lnk/passwd", "nope", "etc/passwd/x", "../etc"} {
		if n := tree.Lookup(p); n != nil && p != "../etc" {
			t.Errorf("Lookup(%q) = %+v, want nil", p, n)
		}
	}
	if tree.Lookup("/") != tree.Root || tree.Lookup("") != tree.Root {
		t.Error("Lookup of the root")
	}
	if tree.Lookup("hl") != tree.Lookup("etc/passwd") {
		t.Error("hard link is not the same node")
	}
	motd := tree.Lookup("etc/motd")
	if motd.Layer != 1 || motd.Xattrs["user.a"] != "b" || motd.Mtime != mtimeNs {
		t.Errorf("motd = %+v", motd)
	}
	if tree.Lookup("etc/group").Xattrs != nil {
		t.Error("xattrs of a file without any are not nil")
	}
	if got := tree.Layers; len(got) != 2 || got[1] != "sha256:layer1" {
		t.Errorf("Layers = %v", got)
	}
	etc := tree.Lookup("etc")
	var names []string
	for _, d := range etc.Children() {
		names = append(names, d.Name)
	}
	if g := strings.Join(names, ","); g != "group,motd,passwd" {
		t.Errorf("children %s", g)
	}
	if etc.Child("motd") != motd || etc.Child("zzz") != nil || motd.Child("x") != nil {
		t.Error("Child")
	}
	if tree.NumInodes() != 7 || tree.NumNames() != 8 {
		t.Errorf("NumInodes %d NumNames %d, want 7 and 8", tree.NumInodes(), tree.NumNames())
	}
	for i := 1; i <= tree.NumInodes(); i++ {
		if n := tree.Inode(uint64(i)); n == nil || n.Ino != uint64(i) {
			t.Errorf("Inode(%d) = %+v", i, n)
		}
	}
	if tree.Inode(0) != nil || tree.Inode(99) != nil {
		t.Error("Inode out of range")
	}
	if m := motd.StatMode(); m != 0o100644 {
		t.Errorf("StatMode = %o", m)
	}

	// Walk: order, SkipDir, errors.
	var walked []string
	tree.Walk(func(p string, n *Node) error {
		walked = append(walked, p)
		if p == "etc" {
			return fs.SkipDir
		}
		return nil
	})
	if g := strings.Join(walked, " "); g != ". etc hl lnk var" {
		t.Errorf("walk with SkipDir: %s", g)
	}
	stop := errors.New("stop")
	if err := tree.Walk(func(p string, n *Node) error { return stop }); err != stop {
		t.Errorf("Walk error = %v", err)
	}

	// Inode numbers are stable.
	tree2, _, _ := mergeTars(t, layers...)
	tree.Walk(func(p string, n *Node) error {
		if m := tree2.Lookup(p); m.Ino != n.Ino {
			t.Errorf("%s: inode %d then %d", p, n.Ino, m.Ino)
		}
		return nil
	})
}

// checkTree verifies the invariants of any merged tree: clean names, no
// whiteout names, consistent link counts and inode numbers.
func checkTree(t testing.TB, tree *Tree) {
	t.Helper()
	if err := treeInvariants(tree); err != nil {
		t.Fatal(err)
	}
}

func treeInvariants(tree *Tree) error {
	names := map[*Node]uint32{}
	seen := map[uint64]*Node{}
	count := 0
	err := tree.Walk(func(p string, n *Node) error {
		count++
		if p != "." {
			if c, err := CleanPath(p); err != nil || c != p {
				return fmt.Errorf("path %q not clean", p)
			}
		}
		for _, comp := range strings.Split(p, "/") {
			if strings.HasPrefix(comp, WhiteoutPrefix) {
				return fmt.Errorf("whiteout name %q in tree", p)
			}
		}
		if n.Type < TypeReg || n.Type > TypeFifo || n.Type == TypeHardlink {
			return fmt.Errorf("%s: type %v in tree", p, n.Type)
		}
		if o := seen[n.Ino]; o != nil && o != n {
			return fmt.Errorf("%s: inode %d shared by two nodes", p, n.Ino)
		}
		seen[n.Ino] = n
		if tree.Inode(n.Ino) != n {
			return fmt.Errorf("%s: Inode(%d) is another node", p, n.Ino)
		}
		names[n]++
		if n.Type == TypeDir {
			subdirs := uint32(0)
			prev := ""
			for i, d := range n.Children() {
				if i > 0 && d.Name <= prev {
					return fmt.Errorf("%s: children not sorted", p)
				}
				prev = d.Name
				if d.Name == "" || d.Name == "." || d.Name == ".." || strings.Contains(d.Name, "/") {
					return fmt.Errorf("%s: bad child name %q", p, d.Name)
				}
				if d.Node.Type == TypeDir {
					subdirs++
				}
			}
			if n.Nlink != 2+subdirs {
				return fmt.Errorf("%s: dir nlink %d, want %d", p, n.Nlink, 2+subdirs)
			}
		} else if len(n.Children()) != 0 {
			return fmt.Errorf("%s: non-directory with children", p)
		}
		if n.Type == TypeReg && (n.Size < 0 || n.Offset < 0 || int(n.Layer) >= len(tree.Layers)) {
			return fmt.Errorf("%s: bad data location", p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for n, c := range names {
		if n.Type != TypeDir && n.Nlink != c {
			return fmt.Errorf("inode %d: nlink %d, has %d names", n.Ino, n.Nlink, c)
		}
		if n.Type == TypeDir && c != 1 {
			return fmt.Errorf("directory inode %d has %d names", n.Ino, c)
		}
	}
	if len(seen) != tree.NumInodes() || count != tree.NumNames() {
		return fmt.Errorf("walk saw %d inodes %d names; tree says %d and %d", len(seen), count, tree.NumInodes(), tree.NumNames())
	}
	return nil
}
