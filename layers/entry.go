package layers

import (
	"fmt"
	"io/fs"
)

// Whiteout names, as the OCI image spec defines them.
const (
	// WhiteoutPrefix begins the name of a file that deletes, from the layers
	// below, the file named by the rest of its name: ".wh.foo" deletes "foo".
	WhiteoutPrefix = ".wh."
	// WhiteoutMetaPrefix begins names reserved for whiteout metadata (AUFS
	// also used ".wh..wh.plnk" and ".wh..wh.aufs"; those are skipped).
	WhiteoutMetaPrefix = WhiteoutPrefix + WhiteoutPrefix
	// WhiteoutOpaque, inside a directory, hides everything the layers below
	// have in that directory.
	WhiteoutOpaque = WhiteoutMetaPrefix + ".opq"
)

// MaxEntrySize is the largest file size accepted in a layer (1 TiB); larger
// or negative sizes are refused with ErrBadSize.
const MaxEntrySize int64 = 1 << 40

// EntryType is the type of a tar entry or of a node of the merged tree.
type EntryType uint8

// Entry types. TypeWhiteout and TypeOpaque appear only in layer entries,
// never in a merged Tree.
const (
	TypeReg EntryType = iota + 1
	TypeDir
	TypeSymlink
	TypeHardlink // only in layer entries: a Tree shares the target's Node
	TypeChar
	TypeBlock
	TypeFifo
	TypeWhiteout // Path is the name deleted from the layers below
	TypeOpaque   // Path is the directory made opaque
)

var typeNames = [...]string{
	TypeReg: "reg", TypeDir: "dir", TypeSymlink: "symlink", TypeHardlink: "hardlink",
	TypeChar: "char", TypeBlock: "block", TypeFifo: "fifo",
	TypeWhiteout: "whiteout", TypeOpaque: "opaque",
}

func (t EntryType) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// FileMode returns the io/fs type bits of t (0 for regular files and for
// the layer-only types).
func (t EntryType) FileMode() fs.FileMode {
	switch t {
	case TypeDir:
		return fs.ModeDir
	case TypeSymlink:
		return fs.ModeSymlink
	case TypeChar:
		return fs.ModeDevice | fs.ModeCharDevice
	case TypeBlock:
		return fs.ModeDevice
	case TypeFifo:
		return fs.ModeNamedPipe
	}
	return 0
}

// S_IF* type bits as in stat(2), for Mode values.
const (
	sIFIFO  = 0o010000
	sIFCHR  = 0o020000
	sIFDIR  = 0o040000
	sIFBLK  = 0o060000
	sIFREG  = 0o100000
	sIFLNK  = 0o120000
	modeSet = 0o7777 // permission bits with setuid, setgid and sticky
)

// StatMode returns the stat(2) st_mode for type t and permission bits perm
// (perm's bits above 07777 are ignored).
func StatMode(t EntryType, perm uint32) uint32 {
	perm &= modeSet
	switch t {
	case TypeDir:
		return perm | sIFDIR
	case TypeSymlink:
		return perm | sIFLNK
	case TypeChar, TypeWhiteout:
		return perm | sIFCHR
	case TypeBlock:
		return perm | sIFBLK
	case TypeFifo:
		return perm | sIFIFO
	}
	return perm | sIFREG
}

// Entry is one entry of a layer's tar stream, checked and normalised.
type Entry struct {
	// Path is cleaned and relative, without a leading "/" or "./"; the
	// root is ".". For TypeWhiteout it is the path deleted ("a/b" for
	// "a/.wh.b"); for TypeOpaque the directory ("a" for "a/.wh..wh..opq").
	Path string
	Type EntryType
	// Mode holds the permission bits with setuid, setgid and sticky (07777).
	Mode     uint32
	UID, GID uint32
	// Size is the content size of a regular file, 0 for other types.
	Size int64
	// ModTime is the modification time in nanoseconds since the Unix epoch,
	// saturated to the int64 range.
	ModTime int64
	// Linkname is the target of a symlink (as written in the archive, not
	// followed) or, for TypeHardlink, the cleaned path of the link target.
	Linkname string
	// Xattrs holds the PAX SCHILY.xattr.* records; nil when there are none.
	Xattrs             map[string]string
	Devmajor, Devminor uint32
	// Offset is where the content of a regular file starts in the
	// uncompressed tar stream (0 for other types).
	Offset int64
}
