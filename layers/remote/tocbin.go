package remote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// The TOC of an eStargz layer is kept in the chunk cache twice: as the JSON
// the layer holds (checked against the layer's TOC digest whenever it is
// read back) and in the compact form below, which a warm open decodes
// instead. Parsing the JSON is what a warm lazy start of an eStargz image
// spent most of its CPU on: 39 ms for the 9,263 entries of the largest
// layer of the bench's large image (77 ms for its four layers), against a
// few for this form. The compact form is made from the JSON only after the
// JSON was checked against the digest, and carries a CRC-32C against
// damage on disk; it cannot be checked against the digest itself, so it is
// trusted as the store trusts its own index files. Anything wrong with it
// (damage, another version) falls back to the JSON.
//
// Format, version 1: the magic "dabba-toc" and a version byte; the TOC's
// offset in the blob and the JTOC's version (varints); the number of
// entries; per entry its string fields (Name, Type, ModTime3339, LinkName,
// Uname, Gname, Digest, ChunkDigest; each a uvarint length and the bytes),
// its numbers (Size, Mode, UID, GID, Offset, InnerOffset, DevMajor,
// DevMinor, ChunkOffset, ChunkSize; signed varints) and its xattrs (a
// count, then each name and value, sorted by name); last the CRC-32C
// (Castagnoli) of all before it, big-endian.
const tocBinMagic = "dabba-toc\x01"

var errTOCBin = errors.New("compact eStargz TOC unusable")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// marshalTOC encodes toc, found at tocOff in its blob.
func marshalTOC(toc *estargz.JTOC, tocOff int64) []byte {
	b := make([]byte, 0, 64+96*len(toc.Entries))
	b = append(b, tocBinMagic...)
	b = binary.AppendVarint(b, tocOff)
	b = binary.AppendVarint(b, int64(toc.Version))
	b = binary.AppendUvarint(b, uint64(len(toc.Entries)))
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	for _, e := range toc.Entries {
		for _, s := range []string{e.Name, e.Type, e.ModTime3339, e.LinkName, e.Uname, e.Gname, e.Digest, e.ChunkDigest} {
			str(s)
		}
		for _, n := range []int64{e.Size, e.Mode, int64(e.UID), int64(e.GID), e.Offset, e.InnerOffset, int64(e.DevMajor), int64(e.DevMinor), e.ChunkOffset, e.ChunkSize} {
			b = binary.AppendVarint(b, n)
		}
		names := make([]string, 0, len(e.Xattrs))
		for k := range e.Xattrs {
			names = append(names, k)
		}
		sort.Strings(names)
		b = binary.AppendUvarint(b, uint64(len(names)))
		for _, k := range names {
			str(k)
			str(string(e.Xattrs[k]))
		}
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// unmarshalTOC decodes what marshalTOC made: the TOC and its offset.
func unmarshalTOC(data []byte) (*estargz.JTOC, int64, error) {
	if len(data) < len(tocBinMagic)+4 || string(data[:len(tocBinMagic)]) != tocBinMagic {
		return nil, 0, fmt.Errorf("%w: not version 1", errTOCBin)
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(data[len(data)-4:]) {
		return nil, 0, fmt.Errorf("%w: checksum mismatch", errTOCBin)
	}
	d := tocDecoder{b: body[len(tocBinMagic):]}
	off := d.int()
	toc := &estargz.JTOC{Version: int(d.int())}
	n := d.uint()
	if n > uint64(len(d.b))/19 { // an entry takes at least 19 bytes
		return nil, 0, fmt.Errorf("%w: %d entries in %d bytes", errTOCBin, n, len(d.b))
	}
	toc.Entries = make([]*estargz.TOCEntry, 0, n)
	for range n {
		e := &estargz.TOCEntry{}
		for _, p := range []*string{&e.Name, &e.Type, &e.ModTime3339, &e.LinkName, &e.Uname, &e.Gname, &e.Digest, &e.ChunkDigest} {
			*p = d.str()
		}
		var uid, gid, major, minor int64
		for _, p := range []*int64{&e.Size, &e.Mode, &uid, &gid, &e.Offset, &e.InnerOffset, &major, &minor, &e.ChunkOffset, &e.ChunkSize} {
			*p = d.int()
		}
		e.UID, e.GID, e.DevMajor, e.DevMinor = int(uid), int(gid), int(major), int(minor)
		nx := d.uint()
		if nx > uint64(len(d.b))/2 {
			return nil, 0, fmt.Errorf("%w: %d xattrs in %d bytes", errTOCBin, nx, len(d.b))
		}
		if nx > 0 {
			e.Xattrs = make(map[string][]byte, nx)
			for range nx {
				k := d.str()
				e.Xattrs[k] = []byte(d.str())
			}
		}
		if d.err != nil {
			return nil, 0, d.err
		}
		toc.Entries = append(toc.Entries, e)
	}
	if d.err != nil {
		return nil, 0, d.err
	}
	if len(d.b) != 0 {
		return nil, 0, fmt.Errorf("%w: %d bytes left over", errTOCBin, len(d.b))
	}
	return toc, off, nil
}

// tocDecoder reads varints and strings, keeping the first error.
type tocDecoder struct {
	b   []byte
	err error
}

func (d *tocDecoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or malformed", errTOCBin)
	}
	d.b = nil
}

func (d *tocDecoder) uint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *tocDecoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *tocDecoder) str() string {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
