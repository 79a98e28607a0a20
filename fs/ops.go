package fs

import (
	"sort"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/layers"
)

// Every method below is a FUSE operation: the only place in the package
// where errors become a fuse.Status.

var _ fuse.RawFileSystem = (*FS)(nil)

// String implements fuse.RawFileSystem.
func (f *FS) String() string { return "dabba-fs" }

// fillAttr fills a with the attributes of n.
func (f *FS) fillAttr(n *layers.Node, a *fuse.Attr) {
	a.Ino = n.Ino
	a.Mode = n.StatMode()
	a.Nlink = n.Nlink
	switch n.Type {
	case layers.TypeReg:
		a.Size = uint64(n.Size)
	case layers.TypeSymlink:
		a.Size = uint64(len(n.Linkname))
	case layers.TypeDir:
		a.Size = 4096 // as ext4 and overlayfs show a small directory
	case layers.TypeChar, layers.TypeBlock:
		// The kernel decodes rdev with new_decode_dev, whose 32-bit
		// format is the low half of glibc's makedev.
		a.Rdev = uint32(unix.Mkdev(n.Devmajor, n.Devminor))
	}
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096
	sec, nsec := n.Mtime/1e9, n.Mtime%1e9
	if nsec < 0 { // before 1970; the kernel reads the seconds as signed
		sec, nsec = sec-1, nsec+1e9
	}
	a.Atime, a.Mtime, a.Ctime = uint64(sec), uint64(sec), uint64(sec)
	a.Atimensec, a.Mtimensec, a.Ctimensec = uint32(nsec), uint32(nsec), uint32(nsec)
	a.Uid, a.Gid = n.UID, n.GID
	if f.ids != nil {
		a.Uid, a.Gid = f.ids(n.UID, n.GID)
	}
}

func (f *FS) fillEntry(n *layers.Node, out *fuse.EntryOut) {
	out.NodeId = n.Ino
	out.Generation = 1
	out.SetEntryTimeout(f.timeout)
	out.SetAttrTimeout(f.timeout)
	f.fillAttr(n, &out.Attr)
}

// Lookup implements fuse.RawFileSystem.
func (f *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	d := f.node(h.NodeId)
	if d == nil {
		return fuse.ENOENT
	}
	if d.Type != layers.TypeDir {
		return fuse.ENOTDIR
	}
	c := d.Child(name)
	if c == nil {
		// Node id 0 with success is a negative entry the kernel
		// caches for the entry timeout, where ENOENT is not cached.
		out.NodeId = 0
		out.SetEntryTimeout(f.timeout)
		return fuse.OK
	}
	f.fillEntry(c, out)
	return fuse.OK
}

// Forget implements fuse.RawFileSystem. Every node lives as long as the
// tree, so there is nothing to forget.
func (f *FS) Forget(nodeid, nlookup uint64) {}

// GetAttr implements fuse.RawFileSystem.
func (f *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	n := f.node(in.NodeId)
	if n == nil {
		return fuse.ENOENT
	}
	out.SetTimeout(f.timeout)
	f.fillAttr(n, &out.Attr)
	return fuse.OK
}

// Init implements fuse.RawFileSystem: it is called once the kernel and
// the server have agreed on the protocol, before any other request.
func (f *FS) Init(srv *fuse.Server) {
	if f.push != nil {
		f.push.srv = srv
	}
}

// Open implements fuse.RawFileSystem. It answers ENOSYS: the kernel then
// never sends OPEN or RELEASE again (no_open, Linux 4.19) and opens every
// file as if with FOPEN_KEEP_CACHE, sparing two round trips per open(2).
// Reads need no file handle. Writers never get here: the mount is
// read-only.
func (f *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

// Read implements fuse.RawFileSystem.
func (f *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	n := f.node(in.NodeId)
	if n == nil {
		return nil, fuse.ENOENT
	}
	if n.Type != layers.TypeReg {
		return nil, fuse.EINVAL
	}
	f.reads.Add(1)
	off := int64(in.Offset)
	if f.push != nil {
		if off == 0 {
			f.push.read(n.Ino)
		}
		f.push.readOn(n, off, int64(in.Size))
	}
	if off >= n.Size {
		return fuse.ReadResultData(nil), fuse.OK
	}
	size := min(int64(in.Size), n.Size-off)
	r := &pooledResult{bp: getScratch(int(size))}
	if err := f.readContent(n, *r.bp, off); err != nil {
		r.Done()
		return nil, f.fail(f.readError(n, off, int(size), err))
	}
	return r, fuse.OK
}

// pooledResult is the reply to a READ in a buffer of scratchPool, given
// back once go-fuse has written it to the kernel. go-fuse's own buffer
// for the reply comes from a pool per size in pages, and the kernel asks
// for reads of many sizes, so most replies would land in a fresh buffer,
// whose first touch costs far more than the copy (scratch.go).
type pooledResult struct{ bp *[]byte }

// Bytes copies the reply into go-fuse's buffer: go-fuse may call Done
// before it writes what Bytes returned (it writes Slices otherwise).
func (r *pooledResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	return append(buf[:0], *r.bp...), fuse.OK
}
func (r *pooledResult) Size() int { return len(*r.bp) }

// Slices makes go-fuse write the reply with writev straight from the
// buffer, without copying it into its own.
func (r *pooledResult) Slices() ([][]byte, fuse.Status) { return [][]byte{*r.bp}, fuse.OK }

// Done implements fuse.ReadResult.
func (r *pooledResult) Done() {
	if r.bp != nil {
		putScratch(r.bp)
		r.bp = nil
	}
}

// Release implements fuse.RawFileSystem.
func (f *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {}

// Readlink implements fuse.RawFileSystem.
func (f *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	n := f.node(h.NodeId)
	if n == nil {
		return nil, fuse.ENOENT
	}
	if n.Type != layers.TypeSymlink {
		return nil, fuse.EINVAL
	}
	return []byte(n.Linkname), fuse.OK
}

// OpenDir implements fuse.RawFileSystem. Listings are stateless (the
// offset is the index of the next entry). ENOSYS makes the kernel stop
// sending OPENDIR and RELEASEDIR (no_opendir, Linux 5.1) and treat every
// directory as opened with FOPEN_KEEP_CACHE|FOPEN_CACHE_DIR: it keeps the
// listings it has read.
func (f *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

// ReleaseDir implements fuse.RawFileSystem.
func (f *FS) ReleaseDir(in *fuse.ReleaseIn) {}

// FsyncDir implements fuse.RawFileSystem.
func (f *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status { return fuse.OK }

// Fsync implements fuse.RawFileSystem.
func (f *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status { return fuse.OK }

// Flush implements fuse.RawFileSystem. ENOSYS: the kernel stops sending
// FLUSH at every close(2) (no_flush); there is nothing to flush.
func (f *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status { return fuse.ENOSYS }

// ReadDir implements fuse.RawFileSystem.
func (f *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(in, out, false)
}

// ReadDirPlus implements fuse.RawFileSystem: the listing with each entry's
// attributes, which saves `find` and `ls -l` a lookup per name.
func (f *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(in, out, true)
}

// readDir lists directory entries from offset in.Offset: 0 is ".", 1 is
// "..", and 2+i is the directory's i-th child; an entry's Off is the
// offset of the one after it.
func (f *FS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	d := f.node(in.NodeId)
	if d == nil {
		return fuse.ENOENT
	}
	if d.Type != layers.TypeDir {
		return fuse.ENOTDIR
	}
	kids := d.Children()
	if in.Offset >= uint64(len(kids))+2 && f.push != nil {
		// The end of the listing: a walker reads the files next.
		f.push.listed(d.Ino)
	}
	for off := in.Offset; off < uint64(len(kids))+2; off++ {
		var e fuse.DirEntry
		var n *layers.Node
		switch off {
		case 0:
			e = fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: d.Ino}
		case 1:
			e = fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: uint64(f.parents[d.Ino-1])}
		default:
			k := kids[off-2]
			n = k.Node
			e = fuse.DirEntry{Name: k.Name, Mode: n.StatMode(), Ino: n.Ino}
		}
		e.Off = off + 1
		if !plus {
			if !out.AddDirEntry(e) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			break
		}
		if n != nil { // "." and ".." carry no entry: node id 0
			f.fillEntry(n, eo)
		}
	}
	return fuse.OK
}

// GetXAttr implements fuse.RawFileSystem.
func (f *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if !f.xattrs {
		return 0, fuse.ENOSYS // no_getxattr: the kernel answers EOPNOTSUPP itself
	}
	n := f.node(h.NodeId)
	if n == nil {
		return 0, fuse.ENOENT
	}
	v, ok := n.Xattrs[attr]
	if !ok {
		return 0, fuse.ENOATTR
	}
	if len(dest) < len(v) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

// ListXAttr implements fuse.RawFileSystem.
func (f *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	if !f.xattrs {
		return 0, fuse.ENOSYS // no_listxattr: the kernel answers EOPNOTSUPP itself
	}
	n := f.node(h.NodeId)
	if n == nil {
		return 0, fuse.ENOENT
	}
	names := make([]string, 0, len(n.Xattrs))
	for k := range n.Xattrs {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		b.WriteString(k)
		b.WriteByte(0)
	}
	if len(dest) < b.Len() {
		return uint32(b.Len()), fuse.ERANGE
	}
	return uint32(copy(dest, b.String())), fuse.OK
}

// Access implements fuse.RawFileSystem. The mount uses the kernel's
// permission checks (default_permissions); only writing is refused here.
func (f *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if in.Mask&unix.W_OK != 0 {
		return fuse.EROFS
	}
	return fuse.OK
}

// StatFs implements fuse.RawFileSystem.
func (f *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	out.Bsize, out.Frsize = 512, 512
	out.Blocks = f.blocks
	out.Files = uint64(f.tree.NumInodes())
	out.NameLen = 255
	return fuse.OK
}

// Writing operations: the image is read-only. The mount is read-only too,
// so the kernel refuses most of these before asking.

// SetAttr implements fuse.RawFileSystem.
func (f *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	return fuse.EROFS
}

// Mknod implements fuse.RawFileSystem.
func (f *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

// Mkdir implements fuse.RawFileSystem.
func (f *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

// Unlink implements fuse.RawFileSystem.
func (f *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.EROFS
}

// Rmdir implements fuse.RawFileSystem.
func (f *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.EROFS
}

// Rename implements fuse.RawFileSystem.
func (f *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return fuse.EROFS
}

// Link implements fuse.RawFileSystem.
func (f *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

// Symlink implements fuse.RawFileSystem.
func (f *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}

// SetXAttr implements fuse.RawFileSystem.
func (f *FS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return fuse.EROFS
}

// RemoveXAttr implements fuse.RawFileSystem.
func (f *FS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return fuse.EROFS
}

// Create implements fuse.RawFileSystem.
func (f *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return fuse.EROFS
}

// Write implements fuse.RawFileSystem.
func (f *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}

// Fallocate implements fuse.RawFileSystem.
func (f *FS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return fuse.EROFS
}
