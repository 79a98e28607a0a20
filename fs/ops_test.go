package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	lt "github.com/dabba/dabba/layers/layertest"
)

// These tests call the FUSE operations directly: no /dev/fuse, no root.

// DeviceServer has the shape of sandbox.FUSEServer (which fs must not
// import): cmd/dabba hands it over as is.
var _ interface {
	Serve(ctx context.Context, dev *os.File) (stop func() error, err error)
} = (*DeviceServer)(nil)

func opsImage(t *testing.T, opts Options) *image {
	return newImage(t, opts, conformanceLayers()...)
}

func TestLookupGetAttr(t *testing.T) {
	im := opsImage(t, Options{Timeout: 5 * time.Minute})
	etc := im.tree.Lookup("etc")
	var out fuse.EntryOut
	if st := im.fs.Lookup(nil, &fuse.InHeader{NodeId: etc.Ino}, "passwd", &out); !st.Ok() {
		t.Fatalf("lookup etc/passwd: %v", st)
	}
	passwd := im.tree.Lookup("etc/passwd")
	if out.NodeId != passwd.Ino || out.Ino != passwd.Ino || out.Size != uint64(passwd.Size) ||
		out.Mode != syscall.S_IFREG|0o644 || out.Nlink != 2 || out.EntryValid != 300 || out.AttrValid != 300 {
		t.Errorf("lookup etc/passwd: %+v", out)
	}
	// A missing name is a negative entry the kernel may cache.
	out = fuse.EntryOut{}
	if st := im.fs.Lookup(nil, &fuse.InHeader{NodeId: etc.Ino}, "nope", &out); !st.Ok() || out.NodeId != 0 || out.EntryValid != 300 {
		t.Errorf("lookup of a missing name: %v %+v, want OK, node 0, cached", st, out)
	}
	if st := im.fs.Lookup(nil, &fuse.InHeader{NodeId: passwd.Ino}, "x", &out); st != fuse.ENOTDIR {
		t.Errorf("lookup in a file: %v", st)
	}
	if st := im.fs.Lookup(nil, &fuse.InHeader{NodeId: 1 << 40}, "x", &out); st != fuse.ENOENT {
		t.Errorf("lookup in an unknown node: %v", st)
	}
	var a fuse.AttrOut
	if st := im.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}}, &a); !st.Ok() || a.Ino != 1 || a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Errorf("getattr of the root: %v %+v", st, a)
	}
	if st := im.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: 1 << 40}}, &a); st != fuse.ENOENT {
		t.Errorf("getattr of an unknown node: %v", st)
	}
	uf := im.tree.Lookup("user-file")
	im.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: uf.Ino}}, &a)
	if a.Mtime != 1234567890 || a.Mtimensec != 0 || a.Uid != 1000 || a.Gid != 1000 {
		t.Errorf("user-file: mtime %d.%d owner %d:%d", a.Mtime, a.Mtimensec, a.Uid, a.Gid)
	}
}

// TestReadDirPaging lists a directory through buffers of every size, each
// call resuming at the offset of the last entry returned, as the kernel
// does: every name once, in order.
func TestReadDirPaging(t *testing.T) {
	var es []lt.Entry
	for i := 0; i < 50; i++ {
		es = append(es, lt.File("d/"+strings.Repeat("x", i+1), ""))
	}
	im := newImage(t, Options{}, lt.Tar(es...))
	d := im.tree.Lookup("d")
	for _, plus := range []bool{false, true} {
		for _, size := range []int{400, 1000, 4096} { // the kernel gives 4 KiB; one entry fits in 400
			var names []string
			off := uint64(0)
			for calls := 0; calls < 1000; calls++ {
				buf := make([]byte, size)
				l := fuse.NewDirEntryList(buf, off)
				in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: d.Ino}, Offset: off, Size: uint32(size)}
				var st fuse.Status
				if plus {
					st = im.fs.ReadDirPlus(nil, in, l)
				} else {
					st = im.fs.ReadDir(nil, in, l)
				}
				if !st.Ok() {
					t.Fatal(st)
				}
				if len(l.Bytes()) == 0 {
					break
				}
				if plus {
					// ParseDirEntries reads plain dirents; count
					// entries through the offsets instead.
					for o := off; o < l.Offset; o++ {
						names = append(names, "?")
					}
					off = l.Offset
					continue
				}
				ents, err := fuse.ParseDirEntries(l.Bytes())
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range ents {
					names = append(names, e.Name)
					off = e.Off
				}
			}
			if len(names) != 52 {
				t.Errorf("plus=%v size %d: %d entries, want 52", plus, size, len(names))
				continue
			}
			if !plus && (names[0] != "." || names[1] != ".." || names[2] != "x" || names[51] != strings.Repeat("x", 50)) {
				t.Errorf("size %d: entries %q", size, names)
			}
		}
	}
	l := fuse.NewDirEntryList(make([]byte, 100), 0)
	if st := im.fs.ReadDir(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: im.tree.Lookup("d/x").Ino}}, l); st != fuse.ENOTDIR {
		t.Errorf("readdir of a file: %v", st)
	}
}

func TestReadOps(t *testing.T) {
	im := opsImage(t, Options{})
	big := im.tree.Lookup("big")
	buf := make([]byte, 4096)
	res, st := im.fs.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: big.Ino}, Offset: 1000, Size: 4096}, buf)
	if !st.Ok() {
		t.Fatal(st)
	}
	b, _ := res.Bytes(nil)
	if string(b) != content(300<<10, 1)[1000:5096] {
		t.Error("read of big at 1000: wrong bytes")
	}
	res, st = im.fs.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: big.Ino}, Offset: uint64(big.Size) - 10, Size: 4096}, buf)
	if b, _ := res.Bytes(nil); !st.Ok() || len(b) != 10 {
		t.Errorf("read across the end: %v, %d bytes", st, len(b))
	}
	res, st = im.fs.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: big.Ino}, Offset: 1 << 40, Size: 4096}, buf)
	if b, _ := res.Bytes(nil); !st.Ok() || len(b) != 0 {
		t.Errorf("read beyond the end: %v, %d bytes", st, len(b))
	}
	if _, st := im.fs.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: 1}}, buf); st != fuse.EINVAL {
		t.Errorf("read of a directory: %v", st)
	}
	if _, st := im.fs.Readlink(nil, &fuse.InHeader{NodeId: big.Ino}); st != fuse.EINVAL {
		t.Errorf("readlink of a file: %v", st)
	}
	if l, st := im.fs.Readlink(nil, &fuse.InHeader{NodeId: im.tree.Lookup("bin").Ino}); !st.Ok() || string(l) != "usr/bin" {
		t.Errorf("readlink bin: %q %v", l, st)
	}
	var so fuse.StatfsOut
	if st := im.fs.StatFs(nil, &fuse.InHeader{}, &so); !st.Ok() || so.Files != uint64(im.tree.NumInodes()) || so.Blocks == 0 {
		t.Errorf("statfs: %v %+v", st, so)
	}
	// Open answers ENOSYS on purpose (see Open).
	if st := im.fs.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: big.Ino}}, &fuse.OpenOut{}); st != fuse.ENOSYS {
		t.Errorf("open: %v, want ENOSYS", st)
	}
	for name, st := range map[string]fuse.Status{
		"mkdir":   im.fs.Mkdir(nil, &fuse.MkdirIn{}, "x", &fuse.EntryOut{}),
		"unlink":  im.fs.Unlink(nil, &fuse.InHeader{NodeId: 1}, "big"),
		"create":  im.fs.Create(nil, &fuse.CreateIn{}, "x", &fuse.CreateOut{}),
		"setattr": im.fs.SetAttr(nil, &fuse.SetAttrIn{}, &fuse.AttrOut{}),
	} {
		if st != fuse.EROFS {
			t.Errorf("%s: %v, want EROFS", name, st)
		}
	}
}

// TestReadError: a layer that cannot give the bytes gives EIO and one
// error naming the file, through OnError and Errors.
func TestReadError(t *testing.T) {
	im := opsImage(t, Options{})
	big := im.tree.Lookup("big")
	if err := os.Truncate(im.paths[0], big.Offset+10); err != nil {
		t.Fatal(err)
	}
	_, st := im.fs.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: big.Ino}, Offset: 0, Size: 4096}, make([]byte, 4096))
	if st != fuse.EIO {
		t.Fatalf("read from a truncated layer: %v, want EIO", st)
	}
	n, first := im.fs.Errors()
	if n != 1 || !strings.Contains(first.Error(), "/big ") || !strings.Contains(first.Error(), "layer0") {
		t.Errorf("Errors: %d, %v", n, first)
	}
	if msg := im.errors(); msg != first.Error() {
		t.Errorf("OnError got %q", msg)
	}
}

func TestXattrOps(t *testing.T) {
	// Without any xattr in the image, the kernel is told once.
	im := newImage(t, Options{}, lt.Tar(lt.File("a", "a")))
	if _, st := im.fs.GetXAttr(nil, &fuse.InHeader{NodeId: 1}, "user.x", nil); st != fuse.ENOSYS {
		t.Errorf("getxattr without xattrs: %v, want ENOSYS", st)
	}
	if _, st := im.fs.ListXAttr(nil, &fuse.InHeader{NodeId: 1}, nil); st != fuse.ENOSYS {
		t.Errorf("listxattr without xattrs: %v, want ENOSYS", st)
	}
	im = opsImage(t, Options{})
	x := im.tree.Lookup("xattrs").Ino
	if n, st := im.fs.GetXAttr(nil, &fuse.InHeader{NodeId: x}, "user.one", nil); st != fuse.ERANGE || n != 1 {
		t.Errorf("size of user.one: %d %v", n, st)
	}
	if _, st := im.fs.GetXAttr(nil, &fuse.InHeader{NodeId: 1}, "user.one", nil); st != fuse.ENOATTR {
		t.Errorf("missing xattr: %v", st)
	}
	buf := make([]byte, 100)
	if n, st := im.fs.ListXAttr(nil, &fuse.InHeader{NodeId: x}, buf); !st.Ok() || string(buf[:n]) != "user.one\x00user.two\x00" {
		t.Errorf("listxattr: %q %v", buf[:n], st)
	}
}

func TestKernelMountArgs(t *testing.T) {
	typ, flags, data := KernelMountArgs(7, 0, 0, MountOptions{AllowOther: true})
	if typ != "fuse.dabba-fs" || flags&syscall.MS_RDONLY == 0 || flags&syscall.MS_NOSUID == 0 || flags&syscall.MS_NODEV == 0 ||
		data != "fd=7,rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other" {
		t.Errorf("KernelMountArgs: %q %#x %q", typ, flags, data)
	}
	if _, flags, _ := KernelMountArgs(7, 0, 0, MountOptions{Suid: true, Dev: true}); flags&(syscall.MS_NOSUID|syscall.MS_NODEV) != 0 {
		t.Errorf("Suid, Dev: flags %#x", flags)
	}
	if _, err := Serve(nil, nil, MountOptions{}); err == nil {
		t.Error("Serve(nil) succeeded")
	}
	if _, err := Mount(t.TempDir()+"/none", nil, MountOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Mount on a missing directory: %v", err)
	}
}

// TestOpenLayers unpacks compressed layers (gzip, zstd) next to an
// uncompressed one: nothing stays in the directory, the bytes still read,
// and a wrong diff_id or a broken blob is an error naming the layer.
func TestOpenLayers(t *testing.T) {
	in := t.TempDir()
	tars := [][]byte{
		lt.Gzip(lt.Tar(lt.File("a", "from gzip"), lt.File("b", "b"))),
		lt.Zstd(lt.Tar(lt.File("c", "from zstd"), lt.Whiteout("b"))),
		lt.Tar(lt.File("d", "plain")),
	}
	var ls []Layer
	for i, b := range tars {
		p := filepath.Join(in, fmt.Sprintf("l%d", i))
		os.WriteFile(p, b, 0o644)
		ls = append(ls, Layer{Path: p})
	}
	dir := t.TempDir()
	tree, src, err := OpenLayers(dir, ls)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("unpacked files left in %s: %v", dir, ents)
	}
	for p, want := range map[string]string{"a": "from gzip", "c": "from zstd", "d": "plain"} {
		n := tree.Lookup(p)
		b := make([]byte, n.Size)
		if _, err := src.ReadAt(int(n.Layer), b, n.Offset); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", p, b, err)
		}
	}
	if tree.Lookup("b") != nil {
		t.Error("b not whited out")
	}
	ls[1].DiffID = "sha256:" + strings.Repeat("0", 64)
	ls[0].DiffID, ls[2].DiffID = ls[1].DiffID, ls[1].DiffID
	if _, _, err := OpenLayers(t.TempDir(), ls); !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong diff_ids: %v", err)
	}
	os.WriteFile(ls[0].Path, tars[0][:len(tars[0])/2], 0o644)
	ls[0].DiffID, ls[1].DiffID, ls[2].DiffID = "", "", ""
	dir = t.TempDir()
	if _, _, err := OpenLayers(dir, ls); err == nil || !strings.Contains(err.Error(), "l0") {
		t.Errorf("truncated gzip layer: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("a failed unpack left %v", ents)
	}
}

// go-fuse's complaint about a reply the kernel no longer waits for goes to
// debug; anything else it logs is a warning.
func TestFuseLog(t *testing.T) {
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(old)
	lg := log.New(fuseLog{}, "", 0)
	lg.Printf("writer: Write/Writev failed, err: 2=no such file or directory. opcode: READ")
	lg.Printf("trySplice: broken pipe")
	got := buf.String()
	if !strings.Contains(got, `level=DEBUG msg="fuse: writer: Write/Writev failed`) || !strings.Contains(got, `level=WARN msg="fuse: trySplice: broken pipe"`) {
		t.Fatalf("log:\n%s", got)
	}
}
