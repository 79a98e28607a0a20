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
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s; rebuild the index", ErrIndex, fmt.Sprintf(format, args...))
	}
	if len(data) < len(magic)+1+4 || string(data[:len(magic)]) != magic {
		return bad("not a gzran index (bad magic)")
	}
	v := data[len(magic)]
	if v != formatVersion && v != detachedVersion {
		return bad("format version %d, this build reads versions %d and %d", v, formatVersion, detachedVersion)
	}
	detached := v == detachedVersion
	body := data[:len(data)-4]
	if got, want := crc32.Checksum(body, castagnoli), binary.BigEndian.Uint32(data[len(data)-4:]); got != want {
		return bad("checksum mismatch (stored %08x, computed %08x): the index file is corrupt or truncated", want, got)
	}
	b := body[len(magic)+1:]
	next := func() (int64, error) {
		v, n := binary.Uvarint(b)
		if n <= 0 || v > 1<<62 {
			return 0, bad("malformed number at byte %d", len(data)-4-len(b))
		}
		b = b[n:]
		return int64(v), nil
	}
	var hdr [4]int64
	for i := range hdr {
		v, err := next()
		if err != nil {
			return err
		}
		hdr[i] = v
	}
	span, csize, usize, count := hdr[0], hdr[1], hdr[2], hdr[3]
	if span <= 0 {
		return bad("span %d", span)
	}
	if count > int64(len(b)) { // every checkpoint takes at least 4 bytes
		return bad("%d checkpoints in %d bytes", count, len(b))
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
				return err
			}
			f[j] = v
		}
		bit += f[0]
		out += f[1]
		if i > 0 && f[1] == 0 {
			return bad("checkpoint %d does not advance", i)
		}
		if bit > csize*8 || out > usize || f[2] > windowSize || f[3] > int64(len(b)) || f[2] > out {
			return bad("checkpoint %d out of range", i)
		}
		points = append(points, point{bit: bit, out: out, wlen: int(f[2]), win: b[:f[3]:f[3]]})
		b = b[f[3]:]
	}
	nmarks, err := next()
	if err != nil {
		return err
	}
	if nmarks > int64(len(b)) { // every mark takes at least 2 bytes
		return bad("%d block marks in %d bytes", nmarks, len(b))
	}
	marks := make([]mark, 0, nmarks)
	bit, out = 0, 0
	for i := int64(0); i < nmarks; i++ {
		dbit, err := next()
		if err != nil {
			return err
		}
		dout, err := next()
		if err != nil {
			return err
		}
		bit += dbit
		out += dout
		if dout == 0 || bit > csize*8 || out > usize {
			return bad("block mark %d out of range", i)
		}
		marks = append(marks, mark{bit: bit, out: out})
	}
	if len(b) != 0 {
		return bad("%d unexpected bytes at the end", len(b))
	}
	if count == 0 || points[0].out != 0 {
		return bad("no checkpoint at the start of the stream")
	}
	// Own the windows rather than alias the caller's buffer.
	for i := range points {
		if detached {
			points[i].win = nil
		} else {
			points[i].win = append([]byte(nil), points[i].win...)
		}
	}
	*ix = Index{span: span, csize: csize, usize: usize, points: points, marks: marks, detached: detached}
	return nil
}
