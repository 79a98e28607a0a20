package layers

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dabba/dabba/layers/layertest"
)

const testLayer = "sha256:ab12"

var mtimeNs = layertest.DefaultMtime.UnixNano()

func readAll(t *testing.T, b []byte) []Entry {
	t.Helper()
	ix, err := IndexLayer(bytes.NewReader(b), testLayer)
	if err != nil {
		t.Fatal(err)
	}
	if ix.TarSize != int64(len(b)) {
		t.Errorf("TarSize = %d, want %d", ix.TarSize, len(b))
	}
	return ix.Entries
}

func TestReaderEntries(t *testing.T) {
	long := strings.Repeat("d123456789/", 20) + "file"
	b := layertest.Tar(
		layertest.Dir("/"),
		layertest.Dir("./etc", layertest.Mode(0o750), layertest.Owner(1, 2)),
		layertest.File("etc/passwd", "root\n", layertest.Mode(0o4755),
			layertest.Xattr("user.k", "v"), layertest.Xattr("security.capability", "\x01\x02"),
			layertest.Xattr("trusted.overlay.opaque", "y"), layertest.Xattr("user.overlay.redirect", "/x")),
		layertest.Symlink("/bin/sh", "/etc/../etc/passwd"),
		layertest.Hardlink("etc/hl", "/etc/passwd"),
		layertest.Char("dev/null", 1, 3),
		layertest.Block("dev/sda", 8, 0),
		layertest.Fifo("run/fifo", layertest.Mode(0o1777)),
		layertest.Whiteout("var/gone"),
		layertest.Opaque("usr"),
		layertest.Opaque(""),
		layertest.File(long, "long", layertest.Mtime(time.Unix(1, 5)), layertest.Header(func(h *tar.Header) { h.Format = tar.FormatPAX })),
		layertest.File("empty", ""),
		layertest.File(".wh..wh.plnk/123", "aufs"),
		layertest.File("a/.wh..wh.aufs", ""),
	)
	got := readAll(t, b)
	want := []Entry{
		{Path: ".", Type: TypeDir, Mode: 0o755, ModTime: mtimeNs},
		{Path: "etc", Type: TypeDir, Mode: 0o750, UID: 1, GID: 2, ModTime: mtimeNs},
		{Path: "etc/passwd", Type: TypeReg, Mode: 0o4755, Size: 5, ModTime: mtimeNs,
			Xattrs: map[string]string{"user.k": "v", "security.capability": "\x01\x02"}},
		{Path: "bin/sh", Type: TypeSymlink, Mode: 0o777, Linkname: "/etc/../etc/passwd", ModTime: mtimeNs},
		{Path: "etc/hl", Type: TypeHardlink, Mode: 0o644, Linkname: "etc/passwd", ModTime: mtimeNs},
		{Path: "dev/null", Type: TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtimeNs},
		{Path: "dev/sda", Type: TypeBlock, Mode: 0o660, Devmajor: 8, ModTime: mtimeNs},
		{Path: "run/fifo", Type: TypeFifo, Mode: 0o1777, ModTime: mtimeNs},
		{Path: "var/gone", Type: TypeWhiteout, ModTime: mtimeNs},
		{Path: "usr", Type: TypeOpaque, ModTime: mtimeNs},
		{Path: ".", Type: TypeOpaque, ModTime: mtimeNs},
		{Path: long, Type: TypeReg, Mode: 0o644, Size: 4, ModTime: 1e9 + 5},
		{Path: "empty", Type: TypeReg, Mode: 0o644, ModTime: mtimeNs},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g := got[i]
		if g.Type == TypeReg {
			// The content is where Offset says.
			if c := string(b[g.Offset : g.Offset+g.Size]); g.Size > 0 && c != map[string]string{"etc/passwd": "root\n", long: "long"}[g.Path] {
				t.Errorf("%s: content at offset %d is %q", g.Path, g.Offset, c)
			}
			g.Offset = 0
		}
		if !reflect.DeepEqual(g, want[i]) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, g, want[i])
		}
	}
}

func TestReaderFormats(t *testing.T) {
	long := strings.Repeat("x", 150) + "/" + strings.Repeat("y", 200)
	for _, format := range []tar.Format{tar.FormatGNU, tar.FormatPAX, tar.FormatUSTAR} {
		t.Run(format.String(), func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			name := "short/name"
			if format != tar.FormatUSTAR {
				name = long
			}
			hdrs := []*tar.Header{
				{Name: name, Typeflag: tar.TypeReg, Size: 3, Mode: 0o600, Format: format, ModTime: layertest.DefaultMtime},
				{Name: name + "2", Typeflag: tar.TypeLink, Linkname: name, Format: format, ModTime: layertest.DefaultMtime},
			}
			for _, h := range hdrs {
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
				if h.Size > 0 {
					tw.Write([]byte("abc"))
				}
			}
			tw.Close()
			b := buf.Bytes()
			got := readAll(t, b)
			if len(got) != 2 || got[0].Path != name || got[1].Linkname != name {
				t.Fatalf("got %+v", got)
			}
			if c := string(b[got[0].Offset : got[0].Offset+3]); c != "abc" {
				t.Errorf("content at offset %d = %q", got[0].Offset, c)
			}
		})
	}
}

// rawTar returns the bytes tar.Writer writes for hdr, without content and
// without end blocks: a truncated archive.
func rawTar(hdr tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&hdr); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func TestHostileEntries(t *testing.T) {
	tests := []struct {
		name    string
		tar     []byte
		want    error  // sentinel; nil = accepted
		msg     string // substring of the error, or of the entries when accepted
		entries string // when accepted: paths (and link targets) of the entries
	}{
		{"dotdot", layertest.Tar(layertest.File("../etc/passwd", "x")), ErrPathEscapes,
			`layer sha256:ab12: entry "../etc/passwd": path escapes the root`, ""},
		{"dotdot inside", layertest.Tar(layertest.File("a/../../b", "x")), ErrPathEscapes, `entry "a/../../b"`, ""},
		{"absolute dotdot", layertest.Tar(layertest.File("/../x", "x")), ErrPathEscapes, "", ""},
		{"dotdot staying inside", layertest.Tar(layertest.File("a/b/../c", "x")), nil, "", "a/c"},
		{"absolute", layertest.Tar(layertest.File("/etc/passwd", "x")), nil, "", "etc/passwd"},
		{"many slashes", layertest.Tar(layertest.File("//./a//b/./c", "x")), nil, "", "a/b/c"},
		{"root dir", layertest.Tar(layertest.Dir("/"), layertest.Dir("./")), nil, "", ". ."},
		{"root as file", layertest.Tar(layertest.File(".", "x")), ErrInvalidPath, "root must be a directory", ""},
		{"root as symlink", layertest.Tar(layertest.Symlink(".", "/etc")), ErrInvalidPath, "", ""},
		{"long component", layertest.Tar(layertest.File(strings.Repeat("n", 256), "x")), ErrInvalidPath, "longer than 255", ""},
		{"path too long", layertest.Tar(layertest.File(strings.Repeat("a/", 2048)+"f", "")), ErrInvalidPath, "longer than 4095", ""},
		{"255 component", layertest.Tar(layertest.File(strings.Repeat("n", 255), "")), nil, "", strings.Repeat("n", 255)},
		{"whiteout as dir component", layertest.Tar(layertest.File(".wh.a/b", "x")), ErrInvalidPath, "whiteout name", ""},
		{"aufs metadata skipped", layertest.Tar(layertest.File(".wh..wh.plnk/1.2", "x"), layertest.File("ok", "")), nil, "", "ok"},
		{"whiteout of dot", layertest.Tar(layertest.File(".wh..", "")), ErrBadWhiteout, "", ""},
		{"whiteout of empty", layertest.Tar(layertest.File("a/.wh.", "")), ErrBadWhiteout, "", ""},
		{"whiteout of dotdot", layertest.Tar(layertest.File("a/.wh...", "")), ErrBadWhiteout, "", ""},
		{"whiteout with content", layertest.Tar(layertest.File("a/.wh.b", "boo")), ErrBadWhiteout, "3 bytes", ""},
		{"whiteout dir", layertest.Tar(layertest.Dir("a/.wh.b")), ErrBadWhiteout, "directory", ""},
		{"opaque with content", layertest.Tar(layertest.File(".wh..wh..opq", "x")), ErrBadWhiteout, "", ""},
		{"hardlink escapes", layertest.Tar(layertest.Hardlink("a", "../../etc/shadow")), ErrPathEscapes, "invalid hard link", ""},
		{"hardlink to root", layertest.Tar(layertest.Hardlink("a", "/")), ErrBadLink, "", ""},
		{"hardlink to whiteout name", layertest.Tar(layertest.Hardlink("a", ".wh.b")), ErrBadLink, "", ""},
		{"hardlink empty", layertest.Tar(layertest.Hardlink("a", "")), ErrBadLink, "", ""},
		{"hardlink absolute", layertest.Tar(layertest.Hardlink("a", "/etc/x")), nil, "", "a>etc/x"},
		{"symlink out is kept", layertest.Tar(layertest.Symlink("a", "../../../../etc/shadow")), nil, "", "a>../../../../etc/shadow"},
		{"symlink empty", layertest.Tar(layertest.Symlink("a", "")), ErrInvalidPath, "symlink target", ""},
		{"huge size", rawTar(tar.Header{Name: "big", Typeflag: tar.TypeReg, Size: 2 << 40}), ErrBadSize, "2199023255552 bytes", ""},
		{"unknown type", layertest.Tar(layertest.Raw(tar.Header{Name: "x", Typeflag: 'Z'}, nil)), ErrUnsupported, "", ""},
		{"truncated content", rawTar(tar.Header{Name: "f", Typeflag: tar.TypeReg, Size: 100}), ErrCorrupt, "", ""},
		{"garbage", bytes.Repeat([]byte("garbage!"), 128), ErrCorrupt, "layer sha256:ab12", ""},
		{"half header", layertest.Tar(layertest.File("a", "x"))[:300], ErrCorrupt, "", ""},
		{"empty stream", nil, nil, "", ""},
		{"end blocks only", make([]byte, 1024), nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix, err := IndexLayer(bytes.NewReader(tt.tar), testLayer)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				var ps []string
				for _, e := range ix.Entries {
					p := e.Path
					if e.Linkname != "" {
						p += ">" + e.Linkname
					}
					ps = append(ps, p)
				}
				if g := strings.Join(ps, " "); g != tt.entries {
					t.Errorf("entries %q, want %q", g, tt.entries)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q, want it to contain %q", err, tt.msg)
			}
		})
	}
}

func TestConvertHeaderFields(t *testing.T) {
	tests := []struct {
		name string
		hdr  tar.Header
		want error
	}{
		{"negative uid", tar.Header{Name: "a", Typeflag: tar.TypeReg, Uid: -1}, ErrBadHeader},
		{"huge gid", tar.Header{Name: "a", Typeflag: tar.TypeReg, Gid: 1 << 33}, ErrBadHeader},
		{"negative devmajor", tar.Header{Name: "a", Typeflag: tar.TypeChar, Devmajor: -1}, ErrBadHeader},
		{"huge devminor", tar.Header{Name: "a", Typeflag: tar.TypeBlock, Devminor: 1 << 32}, ErrBadHeader},
		{"negative size", tar.Header{Name: "a", Typeflag: tar.TypeReg, Size: -1}, ErrBadSize},
		{"gnu sparse", tar.Header{Name: "a", Typeflag: tar.TypeGNUSparse}, ErrUnsupported},
		{"pax sparse", tar.Header{Name: "a", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"GNU.sparse.major": "1"}}, ErrUnsupported},
		{"continuation", tar.Header{Name: "a", Typeflag: tar.TypeCont}, ErrUnsupported},
		{"empty xattr name", tar.Header{Name: "a", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"SCHILY.xattr.": "v"}}, ErrBadHeader},
		{"empty name", tar.Header{Name: "", Typeflag: tar.TypeReg}, ErrInvalidPath},
		{"nul in name", tar.Header{Name: "a\x00b", Typeflag: tar.TypeReg}, ErrInvalidPath},
		{"nul in symlink", tar.Header{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "b\x00"}, ErrInvalidPath},
		{"far future mtime", tar.Header{Name: "a", Typeflag: tar.TypeReg, ModTime: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, nil},
		{"global header skipped", tar.Header{Name: "../x", Typeflag: tar.TypeXGlobalHeader}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := convertHeader(&tt.hdr, 0)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	e, _, _ := convertHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, ModTime: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, 0)
	if e.ModTime != 1<<63-1 {
		t.Errorf("far future mtime = %d, want saturated", e.ModTime)
	}
}

func TestCleanPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "."}, {".", "."}, {"./", "."}, {"a/", "a"}, {"/a/b/", "a/b"}, {"a/./b", "a/b"},
		{"a/b/..", "a"}, {"///a", "a"}, {"..", ""}, {"../a", ""}, {"a/../..", ""}, {"", ""},
	}
	for _, tt := range tests {
		got, err := CleanPath(tt.in)
		if (err != nil) != (tt.want == "") || got != tt.want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestReaderRead(t *testing.T) {
	b := layertest.Tar(layertest.File("a", "alpha"), layertest.Dir("d"), layertest.File("d/b", "beta"))
	r := NewReader(bytes.NewReader(b), testLayer)
	var got []string
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Path+"="+string(c))
	}
	if g := strings.Join(got, " "); g != "a=alpha d= d/b=beta" {
		t.Errorf("got %q", g)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("Next after end = %v, want io.EOF", err)
	}
	if r.Offset() == 0 {
		t.Error("Offset is 0 after reading")
	}
}
