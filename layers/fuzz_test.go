package layers

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"reflect"
	"strings"
	"testing"

	"github.com/dabba/dabba/layers/layertest"
)

// FuzzIndexLayer feeds arbitrary bytes as a tar stream. It must never
// panic; it either fails with a clear error (an *EntryError, or ErrCorrupt)
// or gives entries with clean relative paths whose merged tree keeps every
// invariant, and whose serialised index reads back the same.
func FuzzIndexLayer(f *testing.F) {
	f.Add(layertest.Tar(layertest.File("a", "x"), layertest.Whiteout("b"), layertest.Hardlink("c", "a")))
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := IndexLayer(bytes.NewReader(data), "sha256:fuzz")
		if err != nil {
			var ee *EntryError
			if !errors.As(err, &ee) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unclear error %T: %v", err, err)
			}
			return
		}
		for _, e := range ix.Entries {
			if c, err := CleanPath(e.Path); err != nil || c != e.Path {
				t.Fatalf("entry path %q not clean", e.Path)
			}
			if e.Type == TypeReg && (e.Offset+e.Size > int64(len(data)) || e.Offset < 0) {
				t.Fatalf("entry %q: content at %d+%d beyond the %d-byte stream", e.Path, e.Offset, e.Size, len(data))
			}
		}
		b, _ := ix.MarshalBinary()
		var back Index
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&back, ix) && len(ix.Entries) > 0 {
			t.Fatalf("index round trip differs")
		}
		tree, err := Merge([]*Index{ix})
		if err != nil {
			if !errors.Is(err, ErrBadLink) {
				t.Fatalf("merge: %v", err)
			}
			return
		}
		if err := treeInvariants(tree); err != nil {
			t.Fatal(err)
		}
	})
}

// fuzzPaths are the names fuzzed layers are built from: few, so entries
// collide and replace each other.
var fuzzPaths = []string{"a", "b", "a/b", "a/c", "b/a", "a/b/c", "c", "/a/", "a/b/../c"}

// layersFromOps turns fuzz bytes into layers: each op is 3 bytes, kind,
// path, second path (link target).
func layersFromOps(data []byte) [][]layertest.Entry {
	layers := [][]layertest.Entry{nil}
	for len(data) >= 3 {
		k, p, q := data[0], fuzzPaths[int(data[1])%len(fuzzPaths)], fuzzPaths[int(data[2])%len(fuzzPaths)]
		data = data[3:]
		if k%10 != 2 {
			p = strings.TrimSuffix(p, "/") // tar refuses it on non-directories
		}
		cur := &layers[len(layers)-1]
		switch k % 10 {
		case 0:
			if len(layers) < 5 {
				layers = append(layers, nil)
			}
		case 1:
			*cur = append(*cur, layertest.File(p, fmt.Sprintf("%s@%d", p, len(layers)), layertest.Mode(int64(q[0]))))
		case 2:
			*cur = append(*cur, layertest.Dir(p, layertest.Owner(int(data0(data)), 0)))
		case 3:
			*cur = append(*cur, layertest.Symlink(p, q))
		case 4:
			*cur = append(*cur, layertest.Hardlink(p, q))
		case 5:
			*cur = append(*cur, layertest.Whiteout(p))
		case 6:
			*cur = append(*cur, layertest.Opaque(p))
		case 7:
			*cur = append(*cur, layertest.Fifo(p))
		case 8:
			*cur = append(*cur, layertest.Char(p, 1, int64(k)))
		case 9:
			*cur = append(*cur, layertest.Opaque(""))
		}
	}
	return layers
}

func data0(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// FuzzMerge merges a few fuzzed layers. Invariants: no whiteout names,
// every hard link resolves to a node with the right link count, directory
// link counts, sorted children, stable inode numbers.
func FuzzMerge(f *testing.F) {
	f.Add([]byte{1, 0, 0, 4, 1, 0, 0, 0, 0, 5, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var ixs []*Index
		for i, l := range layersFromOps(data) {
			ix, err := IndexLayer(bytes.NewReader(layertest.Tar(l...)), fmt.Sprintf("sha256:%d", i))
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			ixs = append(ixs, ix)
		}
		tree, err := Merge(ixs)
		if err != nil {
			var ee *EntryError
			if !errors.Is(err, ErrBadLink) || !errors.As(err, &ee) {
				t.Fatalf("merge: %v", err)
			}
			return
		}
		if err := treeInvariants(tree); err != nil {
			t.Fatal(err)
		}
		again, err := Merge(ixs)
		if err != nil {
			t.Fatal(err)
		}
		tree.Walk(func(p string, n *Node) error {
			if m := again.Lookup(p); m == nil || m.Ino != n.Ino {
				t.Fatalf("%s: inode not stable", p)
			}
			return nil
		})
		// Saved and read back, the tree is the same.
		saved, err := tree.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		back, err := UnmarshalTree(saved)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := treeListing(tree), treeListing(back); a != b {
			t.Fatalf("read back:\n%s\nwant:\n%s", b, a)
		}
		// The directory cache changes nothing.
		plain, err := merge(ixs, false)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := treeListing(tree), treeListing(plain); a != b {
			t.Fatalf("with the directory cache:\n%s\nwithout:\n%s", a, b)
		}
	})
}

// treeListing prints every name of a tree with its node's identity and
// metadata, one per line.
func treeListing(t *Tree) string {
	var b strings.Builder
	t.Walk(func(p string, n *Node) error {
		fmt.Fprintf(&b, "%s ino=%d type=%d mode=%o nlink=%d size=%d off=%d layer=%d link=%q\n",
			p, n.Ino, n.Type, n.Mode, n.Nlink, n.Size, n.Offset, n.Layer, n.Linkname)
		return nil
	})
	return b.String()
}

// FuzzIsClean: isClean agrees with CleanPath.
func FuzzIsClean(f *testing.F) {
	for _, p := range []string{".", "a", "a/b", "./a", "a/", "/a", "a//b", "a/./b", "a/../b", "..", "...", "a/..b",
		"", "a\x00b", strings.Repeat("x", 256), strings.Repeat("x/", 2048) + "x", ".wh.a"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		c, err := CleanPath(p)
		if want := err == nil && c == p; isClean(p) != want {
			t.Fatalf("isClean(%q) = %v; CleanPath gives %q, %v", p, !want, c, err)
		}
	})
}

// FuzzUnmarshalTree reads fuzzed saved trees, their checksum made right so
// the structure is what is tested: no panic, and a tree it accepts keeps
// the invariants of a merged one.
func FuzzUnmarshalTree(f *testing.F) {
	for _, ops := range [][]byte{{1, 0, 0, 4, 1, 0, 0, 0, 0, 5, 0, 0}, {2, 1, 3, 4, 0, 1, 2}} {
		var ixs []*Index
		for i, l := range layersFromOps(ops) {
			ix, err := IndexLayer(bytes.NewReader(layertest.Tar(l...)), fmt.Sprintf("sha256:%d", i))
			if err != nil {
				f.Fatal(err)
			}
			ixs = append(ixs, ix)
		}
		if tree, err := Merge(ixs); err == nil {
			b, _ := tree.MarshalBinary()
			f.Add(b[:len(b)-4])
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		data := binary.BigEndian.AppendUint32(bytes.Clone(body), crc32.Checksum(body, castagnoli))
		tree, err := UnmarshalTree(data)
		if err != nil {
			if !errors.Is(err, ErrTreeFile) {
				t.Fatalf("error not ErrTreeFile: %v", err)
			}
			return
		}
		if err := treeInvariants(tree); err != nil {
			t.Fatalf("accepted a tree that breaks an invariant: %v", err)
		}
	})
}
