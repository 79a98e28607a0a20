package gzran

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Serialized index format, version 1. All integers are unsigned varints
// (encoding/binary) unless noted.
//
//	magic      8 bytes  "GZRANIX" followed by the version byte 0x01
//	span                checkpoint spacing the index was built with
//	csize               compressed size of the gzip stream
//	usize               uncompressed size
//	count               number of checkpoints
//	count times:
//	  dbit              compressed bit offset, minus the previous checkpoint's
//	  dout              uncompressed offset, minus the previous checkpoint's
//	  wlen              raw window length (≤ 32768)
//	  clen              length of the compressed window
//	  win    clen bytes window, raw DEFLATE (RFC 1951)
//	marks               number of extra block boundaries (no window)
//	marks times:
//	  dbit              compressed bit offset, minus the previous mark's
//	  dout              uncompressed offset, minus the previous mark's
//	crc        4 bytes  CRC-32C (Castagnoli) of everything before it, big-endian
//
// Version 2 is a detached index (Index.Detach): the same, except that each
// checkpoint has no clen and no win (wlen stays).
//
// The encoding of an Index is a function of its contents alone, so the same
// index always serializes to the same bytes.
const (
	magic           = "GZRANIX"
	formatVersion   = 1
	detachedVersion = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary implements encoding.BinaryMarshaler.
func (ix *Index) MarshalBinary() ([]byte, error) {
	size := len(magic) + 1 + 4*binary.MaxVarintLen64 + 4
	for _, p := range ix.points {
		size += 4*binary.MaxVarintLen64 + len(p.win)
	}
	size += (1 + 2*len(ix.marks)) * binary.MaxVarintLen64
	b := make([]byte, 0, size)
	b = append(b, magic...)
	if ix.detached {
		b = append(b, detachedVersion)
	} else {
		b = append(b, formatVersion)
	}
	b = binary.AppendUvarint(b, uint64(ix.span))
	b = binary.AppendUvarint(b, uint64(ix.csize))
	b = binary.AppendUvarint(b, uint64(ix.usize))
	b = binary.AppendUvarint(b, uint64(len(ix.points)))
	var bit, out int64
	for _, p := range ix.points {
		b = binary.AppendUvarint(b, uint64(p.bit-bit))
		b = binary.AppendUvarint(b, uint64(p.out-out))
		b = binary.AppendUvarint(b, uint64(p.wlen))
		if !ix.detached {
			b = binary.AppendUvarint(b, uint64(len(p.win)))
			b = append(b, p.win...)
		}
		bit, out = p.bit, p.out
	}
	b = binary.AppendUvarint(b, uint64(len(ix.marks)))
	bit, out = 0, 0
	for _, m := range ix.marks {
		b = binary.AppendUvarint(b, uint64(m.bit-bit))
		b = binary.AppendUvarint(b, uint64(m.out-out))
		bit, out = m.bit, m.out
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// UnmarshalBinary implements encoding.BinaryUnmarshaler. A truncated,
// corrupt or inconsistent index, or one of another format version, fails
// with an error wrapping ErrIndex.
func (ix *Index) UnmarshalBinary(data []byte) error {
	if len(data) < len(magic)+1+4 || string(data[:len(magic)]) != magic {
		return badIndex("not a gzran index (bad magic)")
	}
	if err := checkVersion(data[len(magic)]); err != nil {
		return err
	}
	body := data[:len(data)-4]
	if got, want := crc32.Checksum(body, castagnoli), binary.BigEndian.Uint32(data[len(data)-4:]); got != want {
		return badIndex("checksum mismatch (stored %08x, computed %08x): the index file is corrupt or truncated", want, got)
	}
	src := &sliceSource{b: body[len(magic)+1:], size: len(data) - 4}
	dec, err := decode(src, data[len(magic)] == detachedVersion)
	if err != nil {
		return err
	}
	*ix = dec
	return nil
}

func badIndex(format string, args ...any) error {
	return fmt.Errorf("%w: %s; rebuild the index", ErrIndex, fmt.Sprintf(format, args...))
}

func checkVersion(v byte) error {
	if v != formatVersion && v != detachedVersion {
		return badIndex("format version %d, this build reads versions %d and %d", v, formatVersion, detachedVersion)
	}
	return nil
}

// source is what decode reads a serialized index from, after its magic
// and version.
type source interface {
	// next reads an unsigned varint.
	next() (int64, error)
	// window reads a window of n bytes: its bytes, or nil when the source
	// keeps only where they are.
	window(n int64) ([]byte, error)
	// left is how many bytes are left before the trailing checksum.
	left() int64
}

// sliceSource reads a whole serialization in memory.
type sliceSource struct {
	b    []byte
	size int // of the serialization without its checksum
}

func (s *sliceSource) next() (int64, error) {
	v, n := binary.Uvarint(s.b)
	if n <= 0 || v > 1<<62 {
		return 0, badIndex("malformed number at byte %d", s.size-len(s.b))
	}
	s.b = s.b[n:]
	return int64(v), nil
}

func (s *sliceSource) window(n int64) ([]byte, error) {
	// Own the window rather than alias the caller's buffer.
	w := append([]byte(nil), s.b[:n]...)
	s.b = s.b[n:]
	return w, nil
}

func (s *sliceSource) left() int64 { return int64(len(s.b)) }

// decode reads the fields of a serialized index from src and checks that
// they are consistent.
func decode(src source, detached bool) (Index, error) {
	next := src.next
	var hdr [4]int64
	for i := range hdr {
		v, err := next()
		if err != nil {
			return Index{}, err
		}
		hdr[i] = v
	}
	span, csize, usize, count := hdr[0], hdr[1], hdr[2], hdr[3]
	if span <= 0 {
		return Index{}, badIndex("span %d", span)
	}
	if count > src.left() { // every checkpoint takes at least 4 bytes
		return Index{}, badIndex("%d checkpoints in %d bytes", count, src.left())
	}
	points := make([]point, 0, count)
	var bit, out int64
	nf := 4
	if detached {
		nf = 3
	}
	for i := int64(0); i < count; i++ {
		var f [4]int64
		for j := range f[:nf] {
			v, err := next()
			if err != nil {
				return Index{}, err
			}
			f[j] = v
		}
		bit += f[0]
		out += f[1]
		if i > 0 && f[1] == 0 {
			return Index{}, badIndex("checkpoint %d does not advance", i)
		}
		if bit > csize*8 || out > usize || f[2] > windowSize || f[3] > src.left() || f[2] > out {
			return Index{}, badIndex("checkpoint %d out of range", i)
		}
		p := point{bit: bit, out: out, wlen: int(f[2])}
		if !detached {
			w, err := src.window(f[3])
			if err != nil {
				return Index{}, err
			}
			p.win = w
		}
		points = append(points, p)
	}
	nmarks, err := next()
	if err != nil {
		return Index{}, err
	}
	if nmarks > src.left() { // every mark takes at least 2 bytes
		return Index{}, badIndex("%d block marks in %d bytes", nmarks, src.left())
	}
	marks := make([]mark, 0, nmarks)
	bit, out = 0, 0
	for i := int64(0); i < nmarks; i++ {
		dbit, err := next()
		if err != nil {
			return Index{}, err
		}
		dout, err := next()
		if err != nil {
			return Index{}, err
		}
		bit += dbit
		out += dout
		if dout == 0 || bit > csize*8 || out > usize {
			return Index{}, badIndex("block mark %d out of range", i)
		}
		marks = append(marks, mark{bit: bit, out: out})
	}
	if src.left() != 0 {
		return Index{}, badIndex("%d unexpected bytes at the end", src.left())
	}
	if count == 0 || points[0].out != 0 {
		return Index{}, badIndex("no checkpoint at the start of the stream")
	}
	return Index{span: span, csize: csize, usize: usize, points: points, marks: marks, detached: detached}, nil
}
