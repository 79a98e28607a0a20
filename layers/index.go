package layers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"sort"
)

// Index is the list of entries of one layer, in archive order, with the
// offset of each regular file's content in the layer's uncompressed tar
// stream. Build it with IndexLayer; store it with MarshalBinary.
type Index struct {
	// Layer is the layer's digest as given to IndexLayer; it names the
	// layer in errors (also those of Merge).
	Layer string
	// TarSize is the size of the uncompressed tar stream.
	TarSize int64
	// Entries are in archive order. A path may appear more than once (the
	// last one wins, as with tar).
	Entries []Entry
}

// IndexLayer reads the uncompressed tar stream r of the layer named layer
// (its digest, for errors) to its end and returns its index. Use Decompress
// first for a compressed blob. Hostile entries are refused with an
// *EntryError (see the package documentation).
func IndexLayer(r io.Reader, layer string) (*Index, error) {
	tr := NewReader(r, layer)
	ix := &Index{Layer: layer}
	for {
		e, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		ix.Entries = append(ix.Entries, *e)
	}
	n, err := tr.drain()
	if err != nil {
		return nil, err
	}
	ix.TarSize = n
	return ix, nil
}

// Serialised index format, version 1. All integers are varints
// (encoding/binary). Paths are front-coded against the previous entry's
// path, which shrinks a typical index to a third.
//
//	magic "DBBAIDX" version(1 byte)
//	uvarint len(Layer) Layer
//	uvarint TarSize
//	uvarint count
//	count × entry:
//	  uvarint shared-prefix-len, uvarint suffix-len, suffix
//	  type(1 byte) uvarint mode uid gid size varint mtime uvarint offset
//	  uvarint len(linkname) linkname
//	  uvarint devmajor devminor
//	  uvarint nxattrs, nxattrs × (uvarint len name, uvarint len value) sorted by name
//	crc32 (IEEE, 4 bytes little-endian) of everything before it
const (
	indexMagic   = "DBBAIDX"
	indexVersion = 1
)

// MarshalBinary implements encoding.BinaryMarshaler.
func (ix *Index) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 64+len(ix.Entries)*48)
	b = append(b, indexMagic...)
	b = append(b, indexVersion)
	b = appendString(b, ix.Layer)
	b = binary.AppendUvarint(b, uint64(ix.TarSize))
	b = binary.AppendUvarint(b, uint64(len(ix.Entries)))
	prev := ""
	var keys []string
	for i := range ix.Entries {
		e := &ix.Entries[i]
		n := commonPrefix(prev, e.Path)
		b = binary.AppendUvarint(b, uint64(n))
		b = appendString(b, e.Path[n:])
		prev = e.Path
		b = append(b, byte(e.Type))
		b = binary.AppendUvarint(b, uint64(e.Mode))
		b = binary.AppendUvarint(b, uint64(e.UID))
		b = binary.AppendUvarint(b, uint64(e.GID))
		b = binary.AppendUvarint(b, uint64(e.Size))
		b = binary.AppendVarint(b, e.ModTime)
		b = binary.AppendUvarint(b, uint64(e.Offset))
		b = appendString(b, e.Linkname)
		b = binary.AppendUvarint(b, uint64(e.Devmajor))
		b = binary.AppendUvarint(b, uint64(e.Devminor))
		keys = keys[:0]
		for k := range e.Xattrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = binary.AppendUvarint(b, uint64(len(keys)))
		for _, k := range keys {
			b = appendString(b, k)
			b = appendString(b, e.Xattrs[k])
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

// UnmarshalBinary implements encoding.BinaryUnmarshaler. Data that is not a
// whole index of a known version gives an error wrapping ErrCorrupt. The
// entries are not checked again: an index is trusted once its checksum
// matches, as it was built by IndexLayer.
func (ix *Index) UnmarshalBinary(data []byte) error {
	if len(data) < len(indexMagic)+1+4 || string(data[:len(indexMagic)]) != indexMagic {
		return fmt.Errorf("%w: not a layer index", ErrCorrupt)
	}
	if v := data[len(indexMagic)]; v != indexVersion {
		return fmt.Errorf("%w: layer index version %d, want %d (rebuild the index)", ErrCorrupt, v, indexVersion)
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return fmt.Errorf("%w: layer index checksum mismatch", ErrCorrupt)
	}
	d := decoder{b: body[len(indexMagic)+1:]}
	var out Index
	out.Layer = d.string()
	out.TarSize = int64(d.uvarint(math.MaxInt64))
	count := d.uvarint(uint64(len(d.b))) // an entry takes at least one byte
	if d.err == nil {
		out.Entries = make([]Entry, 0, count)
	}
	prev := ""
	for i := uint64(0); i < count && d.err == nil; i++ {
		var e Entry
		n := d.uvarint(uint64(len(prev)))
		e.Path = prev[:n] + d.string()
		prev = e.Path
		e.Type = EntryType(d.byte())
		e.Mode = uint32(d.uvarint(math.MaxUint32))
		e.UID = uint32(d.uvarint(math.MaxUint32))
		e.GID = uint32(d.uvarint(math.MaxUint32))
		e.Size = int64(d.uvarint(math.MaxInt64))
		e.ModTime = d.varint()
		e.Offset = int64(d.uvarint(math.MaxInt64))
		e.Linkname = d.string()
		e.Devmajor = uint32(d.uvarint(math.MaxUint32))
		e.Devminor = uint32(d.uvarint(math.MaxUint32))
		if nx := d.uvarint(uint64(len(d.b))); nx > 0 && d.err == nil {
			e.Xattrs = make(map[string]string, nx)
			for j := uint64(0); j < nx && d.err == nil; j++ {
				k := d.string()
				e.Xattrs[k] = d.string()
			}
		}
		if e.Type < TypeReg || e.Type > TypeOpaque {
			d.fail()
		}
		out.Entries = append(out.Entries, e)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return d.err
	}
	*ix = out
	return nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

var errIndexFormat = errors.New("malformed layer index")

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %w", ErrCorrupt, errIndexFormat)
	}
	d.b = nil
}

func (d *decoder) uvarint(max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > max {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) string() string {
	n := d.uvarint(uint64(len(d.b)))
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
