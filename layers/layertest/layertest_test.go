package layertest

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func TestTar(t *testing.T) {
	b := Tar(
		File("a", "content", Mode(0o4755), Owner(1, 2), Xattr("user.x", "y")),
		Dir("d"),
		Symlink("l", "/t"),
		Hardlink("h", "a"),
		Whiteout("d/gone"),
		Whiteout("top"),
		Opaque("d"),
		Opaque(""),
		Char("c", 1, 3),
		Block("b", 8, 0),
		Fifo("p"),
	)
	want := []struct {
		name string
		typ  byte
	}{
		{"a", tar.TypeReg}, {"d/", tar.TypeDir}, {"l", tar.TypeSymlink}, {"h", tar.TypeLink},
		{"d/.wh.gone", tar.TypeReg}, {".wh.top", tar.TypeReg}, {"d/.wh..wh..opq", tar.TypeReg},
		{".wh..wh..opq", tar.TypeReg}, {"c", tar.TypeChar}, {"b", tar.TypeBlock}, {"p", tar.TypeFifo},
	}
	tr := tar.NewReader(bytes.NewReader(b))
	for i, w := range want {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if h.Name != w.name || h.Typeflag != w.typ {
			t.Errorf("entry %d: %q %c, want %q %c", i, h.Name, h.Typeflag, w.name, w.typ)
		}
		if i == 0 {
			c, _ := io.ReadAll(tr)
			if string(c) != "content" || h.Mode != 0o4755 || h.Uid != 1 || h.Gid != 2 ||
				h.PAXRecords["SCHILY.xattr.user.x"] != "y" || !h.ModTime.Equal(DefaultMtime) {
				t.Errorf("file entry %+v %q", h, c)
			}
		}
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("after last entry: %v", err)
	}
	if !bytes.Equal(Tar(File("a", "x")), Tar(File("a", "x"))) {
		t.Error("Tar is not deterministic")
	}
}

func TestCompress(t *testing.T) {
	b := Tar(File("a", "hello"))
	zr, err := gzip.NewReader(bytes.NewReader(Gzip(b)))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(zr); !bytes.Equal(got, b) {
		t.Error("gzip round trip")
	}
	zd, _ := zstd.NewReader(nil)
	defer zd.Close()
	if got, err := zd.DecodeAll(Zstd(b), nil); err != nil || !bytes.Equal(got, b) {
		t.Errorf("zstd round trip: %v", err)
	}
}

func TestTarPanicsOnBadEntry(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic for a file name with a trailing slash")
		}
	}()
	Tar(File("a/", "x"))
}
