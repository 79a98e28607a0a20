package gzran

import (
	"fmt"
	"math/bits"
	"sync"
)

// entry is one slot of a Huffman decoding table, packed into 32 bits so a
// lookup is one load:
//
//	bits  0-7   n: code length in bits (for a link: the primary table's bits)
//	bits  8-11  extra: extra bits following the code (for a link: the sub-table's bits)
//	bits 12-14  kind
//	bits 16-31  value: literal byte, length or distance base, or sub-table offset
type entry uint32

const (
	kindLit     = 0 // literal byte
	kindBase    = 1 // length (literal/length table) or distance (distance table) base
	kindEOB     = 2 // end of block
	kindLink    = 3 // pointer to a sub-table for codes longer than the primary bits
	kindInvalid = 4 // a symbol the format reserves (286, 287, distance 30, 31) or no code at all
)

func mkEntry(kind, value, extra, n uint32) entry {
	return entry(value<<16 | kind<<12 | extra<<8 | n)
}

// n masks with 63 rather than 0xff (n is at most 15, so bits 6-7 are zero)
// so that shifting by it compiles to a bare shift instruction.
func (e entry) n() uint      { return uint(e & 63) }
func (e entry) extra() uint  { return uint(e>>8) & 0xf }
func (e entry) kind() uint32 { return uint32(e>>12) & 0x7 }
func (e entry) value() int   { return int(e >> 16) }

const maxCodeLen = 15 // RFC 1951 3.2.2: codes are at most 15 bits

// huff is a two-level decoding table in the style of zlib's inflate_table: a
// primary table indexed by the next prim bits of input (the codes are stored
// bit-reversed, since DEFLATE packs Huffman codes starting with their most
// significant bit into an LSB-first stream), whose entries either decode a
// symbol directly or link to a sub-table for longer codes. Sub-table entries
// carry the full code length, so a decode consumes the bits once.
type huff struct {
	table []entry
	prim  uint
	mask  uint64
}

// lookup returns the entry for the code at the bottom of bits. The returned
// entry's n is the full code length; 0 means no code matches.
func (h *huff) lookup(bits uint64) entry {
	e := h.table[bits&h.mask]
	if e.kind() == kindLink {
		e = h.table[e.value()+int((bits>>h.prim)&(1<<e.extra()-1))]
	}
	return e
}

// build fills h from the code lengths of each symbol (0 = unused). syms gives
// the entry template (kind, value, extra) of each symbol. Over-subscribed code
// sets are rejected. As in zlib, an incomplete set is rejected too, except a
// lone one-bit code (RFC 1951 3.2.7 allows a single distance code) when
// complete is false, and an empty set; slots no code reaches decode as invalid.
func (h *huff) build(lens []uint8, syms []entry, prim uint, complete bool) error {
	var count [maxCodeLen + 1]int
	maxLen := 0
	for _, l := range lens {
		count[l]++
		if int(l) > maxLen {
			maxLen = int(l)
		}
	}
	count[0] = 0
	left := 1
	for l := 1; l <= maxCodeLen; l++ {
		left <<= 1
		left -= count[l]
		if left < 0 {
			return fmt.Errorf("%w: over-subscribed Huffman code lengths", ErrCorrupt)
		}
	}
	if left > 0 && maxLen > 0 && (complete || maxLen != 1) {
		return fmt.Errorf("%w: incomplete Huffman code lengths", ErrCorrupt)
	}
	var next [maxCodeLen + 2]int
	code := 0
	for l := 1; l <= maxCodeLen; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}

	h.prim = prim
	h.mask = 1<<prim - 1
	primSize := 1 << prim
	// First pass: the longest code behind each primary slot sizes its sub-table.
	var subBits [1 << 10]uint8
	var codeBuf [288]uint16 // no table has more symbols
	codes := codeBuf[:len(lens)]
	for sym, l := range lens {
		if l == 0 {
			continue
		}
		c := next[l]
		next[l]++
		r := reverse(uint16(c), uint(l))
		codes[sym] = r
		if uint(l) > prim {
			p := int(r) & (primSize - 1)
			if b := uint8(uint(l) - prim); b > subBits[p] {
				subBits[p] = b
			}
		}
	}
	size := primSize
	for p := 0; p < primSize; p++ {
		if subBits[p] > 0 {
			size += 1 << subBits[p]
		}
	}
	if cap(h.table) >= size {
		h.table = h.table[:size]
	} else {
		h.table = make([]entry, size)
	}
	invalid := mkEntry(kindInvalid, 0, 0, 0)
	for i := range h.table {
		h.table[i] = invalid
	}
	off := primSize
	for p := 0; p < primSize; p++ {
		if b := subBits[p]; b > 0 {
			h.table[p] = mkEntry(kindLink, uint32(off), uint32(b), uint32(prim))
			off += 1 << b
		}
	}
	// Second pass: replicate each code into every slot it prefixes.
	for sym, l := range lens {
		if l == 0 {
			continue
		}
		e := syms[sym] | entry(l)
		r := int(codes[sym])
		if uint(l) <= prim {
			for i := r; i < primSize; i += 1 << l {
				h.table[i] = e
			}
			continue
		}
		link := h.table[r&(primSize-1)]
		base, sb := link.value(), int(link.extra())
		step := 1 << (uint(l) - prim)
		for i := r >> prim; i < 1<<sb; i += step {
			h.table[base+i] = e
		}
	}
	return nil
}

// reverse returns the low n bits of c in reverse order.
func reverse(c uint16, n uint) uint16 {
	return bits.Reverse16(c) >> (16 - n)
}

// Symbol templates (RFC 1951 3.2.5).
var (
	litSyms  [288]entry
	distSyms [32]entry
	clSyms   [19]entry

	fixedLit  huff
	fixedDist huff
)

// tablesOnce builds the templates and the fixed tables on the first block
// header: most processes that link this package (dabba's container init
// among them) never inflate, and building them at init cost every start
// 0.5 ms.
var tablesOnce sync.Once

func buildTables() {
	lenBase := [29]uint32{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
		35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lenExtra := [29]uint32{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
		3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase := [30]uint32{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193,
		257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	for i := 0; i < 256; i++ {
		litSyms[i] = mkEntry(kindLit, uint32(i), 0, 0)
	}
	litSyms[256] = mkEntry(kindEOB, 0, 0, 0)
	for i := 0; i < 29; i++ {
		litSyms[257+i] = mkEntry(kindBase, lenBase[i], lenExtra[i], 0)
	}
	litSyms[286] = mkEntry(kindInvalid, 0, 0, 0)
	litSyms[287] = mkEntry(kindInvalid, 0, 0, 0)
	for i := 0; i < 30; i++ {
		extra := uint32(0)
		if i >= 4 {
			extra = uint32(i/2 - 1)
		}
		distSyms[i] = mkEntry(kindBase, distBase[i], extra, 0)
	}
	distSyms[30] = mkEntry(kindInvalid, 0, 0, 0)
	distSyms[31] = mkEntry(kindInvalid, 0, 0, 0)
	for i := range clSyms {
		clSyms[i] = mkEntry(kindLit, uint32(i), 0, 0)
	}

	var lens [288]uint8
	for i := range lens {
		switch {
		case i < 144:
			lens[i] = 8
		case i < 256:
			lens[i] = 9
		case i < 280:
			lens[i] = 7
		default:
			lens[i] = 8
		}
	}
	if err := fixedLit.build(lens[:], litSyms[:], litPrim, true); err != nil {
		panic(err)
	}
	var dl [32]uint8
	for i := range dl {
		dl[i] = 5
	}
	if err := fixedDist.build(dl[:], distSyms[:], distPrim, true); err != nil {
		panic(err)
	}
}

// Primary table sizes: 10 bits covers nearly every literal/length code of
// real data in one lookup; distance codes are fewer and shorter.
const (
	litPrim  = 10
	distPrim = 8
	clPrim   = 7
)
