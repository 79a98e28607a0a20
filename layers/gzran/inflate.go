package gzran

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
)

const (
	windowSize = 32 << 10  // DEFLATE's back-reference limit (RFC 1951 2.)
	maxMatch   = 258       // longest match (RFC 1951 3.2.5)
	outBufSize = 256 << 10 // history + room to decode into before sliding
	inBufSize  = 64 << 10  // compressed read size
)

// Decoder states.
const (
	stHeader      = iota // before a gzip member header
	stBlockHeader        // at a DEFLATE block boundary
	stStored             // inside a stored block
	stHuffman            // inside a fixed or dynamic Huffman block
	stTrailer            // after a member's final block
	stDone               // clean end of the stream
)

// decoder inflates a (possibly multi-member) gzip stream from src, either
// from its start (verifying every member's CRC-32 and ISIZE) or resumed at a
// checkpoint (block boundary plus saved window; no checksums can be checked).
//
// Decoded bytes land in buf; buf[rpos:wpos] are not yet handed out and the
// windowSize bytes before wpos are kept as history for back-references, so
// copies never wrap. Input is read into in and fed through a 64-bit
// little-endian bit accumulator; the absolute compressed bit position is
// (inBase+inPos)*8 - nbits.
type decoder struct {
	src    io.Reader
	in     []byte
	inPos  int
	inBase int64
	bits   uint64 // bits above nbits are either zero or the true next input bits
	nbits  uint
	skip   uint // bits still to drop at a resumed checkpoint

	buf        []byte
	rpos, wpos int
	out        int64 // uncompressed offset of buf[wpos]
	memberOut  int64 // bytes output by the current member (capped knowledge when resumed)
	want       int64 // stop decoding once out reaches want

	state   int
	final   bool
	stored  int
	lit     *huff
	dist    *huff
	dynLit  huff
	dynDist huff
	cl      huff
	lens    [286 + 32]uint8

	verify  bool
	crc     uint32
	members int
	err     error

	onBlock func(d *decoder) error // called at every block boundary, for checkpoints
}

func newDecoder() *decoder {
	return &decoder{
		in:   make([]byte, 0, inBufSize),
		buf:  make([]byte, outBufSize),
		want: math.MaxInt64,
	}
}

// resetStream prepares d to decode a whole gzip stream from src.
func (d *decoder) resetStream(src io.Reader) {
	d.resetInput(src, 0)
	d.rpos, d.wpos, d.out, d.memberOut = 0, 0, 0, 0
	d.state = stHeader
	d.verify = true
	d.members = 0
	d.err = nil
	d.want = math.MaxInt64
}

// resetInput points the bit reader at src, whose first byte is at compressed
// offset base.
func (d *decoder) resetInput(src io.Reader, base int64) {
	d.src = src
	d.in = d.in[:0]
	d.inPos = 0
	d.inBase = base
	d.bits, d.nbits = 0, 0
	d.skip = 0
}

// bitPos is the absolute compressed bit offset of the next unread bit.
func (d *decoder) bitPos() int64 {
	return (d.inBase+int64(d.inPos))*8 - int64(d.nbits)
}

func (d *decoder) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s at compressed byte %d", ErrCorrupt, fmt.Sprintf(format, args...), d.bitPos()/8)
}

// fillIn reads the next chunk of input once in is used up.
func (d *decoder) fillIn() error {
	if d.inPos < len(d.in) {
		return nil
	}
	d.inBase += int64(len(d.in))
	d.in = d.in[:cap(d.in)]
	d.inPos = 0
	for tries := 0; ; tries++ {
		n, err := d.src.Read(d.in)
		if n > 0 {
			d.in = d.in[:n]
			return nil
		}
		if err == io.EOF {
			d.in = d.in[:0]
			return io.EOF
		}
		if err != nil {
			d.in = d.in[:0]
			return fmt.Errorf("reading compressed data at byte %d: %w", d.inBase, err)
		}
		if tries > 100 {
			d.in = d.in[:0]
			return fmt.Errorf("reading compressed data at byte %d: %w", d.inBase, io.ErrNoProgress)
		}
	}
}

// need makes at least n (≤ 57) bits available, reading no more input than
// necessary.
func (d *decoder) need(n uint) error {
	for d.nbits < n {
		if d.inPos == len(d.in) {
			if err := d.fillIn(); err != nil {
				if err == io.EOF {
					return d.truncated()
				}
				return err
			}
		}
		d.bits |= uint64(d.in[d.inPos]) << d.nbits
		d.inPos++
		d.nbits += 8
	}
	return nil
}

func (d *decoder) truncated() error {
	return fmt.Errorf("%w: gzip stream truncated at compressed byte %d", io.ErrUnexpectedEOF, d.bitPos()/8)
}

func (d *decoder) take(n uint) uint64 {
	v := d.bits & (1<<n - 1)
	d.bits >>= n
	d.nbits -= n
	return v
}

func (d *decoder) readBits(n uint) (uint64, error) {
	if err := d.need(n); err != nil {
		return 0, err
	}
	return d.take(n), nil
}

// alignByte drops the bits up to the next byte boundary.
func (d *decoder) alignByte() {
	d.take(d.nbits & 7)
}

// symbol decodes one Huffman symbol, reading input only as needed.
func (d *decoder) symbol(h *huff) (entry, error) {
	for {
		e := h.lookup(d.bits)
		if n := e.n(); n != 0 && n <= d.nbits {
			d.take(n)
			if e.kind() == kindInvalid {
				return e, d.corrupt("invalid Huffman symbol")
			}
			return e, nil
		}
		if d.nbits >= maxCodeLen {
			return e, d.corrupt("invalid Huffman code")
		}
		if err := d.need(d.nbits + 1); err != nil {
			return e, err
		}
	}
}

// step advances decoding by one state transition or one buffer's worth of
// output. It returns with d.wpos advanced, the state changed, or an error.
func (d *decoder) step() error {
	switch d.state {
	case stHeader:
		if d.members > 0 {
			// Another member, or the clean end of the stream.
			if d.nbits == 0 && d.inPos == len(d.in) {
				if err := d.fillIn(); err == io.EOF {
					d.state = stDone
					return nil
				} else if err != nil {
					return err
				}
			}
		}
		if err := d.header(); err != nil {
			return err
		}
		d.memberOut = 0
		d.crc = 0
		d.final = false
		d.state = stBlockHeader
		return nil
	case stBlockHeader:
		if d.onBlock != nil {
			if err := d.onBlock(d); err != nil {
				return err
			}
		}
		return d.blockHeader()
	case stStored:
		return d.storedBlock()
	case stHuffman:
		return d.huffBlock()
	case stTrailer:
		d.alignByte()
		v, err := d.readBits(32)
		if err != nil {
			return err
		}
		size, err := d.readBits(32)
		if err != nil {
			return err
		}
		if d.verify {
			if uint32(v) != d.crc {
				return fmt.Errorf("%w: member %d: CRC-32 %08x in trailer, %08x computed from data", ErrChecksum, d.members+1, v, d.crc)
			}
			if uint32(size) != uint32(d.memberOut) {
				return fmt.Errorf("%w: member %d: ISIZE %d in trailer, %d bytes decoded (mod 2^32)", ErrChecksum, d.members+1, size, uint32(d.memberOut))
			}
		}
		d.members++
		d.state = stHeader
		return nil
	case stDone:
		return io.EOF
	}
	return fmt.Errorf("gzran: internal error: bad decoder state %d", d.state)
}

// header parses a gzip member header (RFC 1952 2.3).
func (d *decoder) header() error {
	start := d.bitPos() / 8
	var h [10]byte
	for i := range h {
		v, err := d.readBits(8)
		if err != nil {
			switch {
			case !errors.Is(err, io.ErrUnexpectedEOF):
				return err
			case i == 0 && d.members == 0:
				return fmt.Errorf("%w: empty input, expected a gzip stream", ErrHeader)
			case i < 2 && d.members > 0:
				return d.garbage(start)
			}
			return fmt.Errorf("%w: truncated gzip header at byte %d", ErrHeader, start)
		}
		h[i] = byte(v)
		if i == 1 && (h[0] != 0x1f || h[1] != 0x8b) {
			if d.members > 0 {
				return d.garbage(start)
			}
			return fmt.Errorf("%w: bad magic %02x %02x at byte %d, not a gzip stream", ErrHeader, h[0], h[1], start)
		}
	}
	if h[2] != 8 {
		return fmt.Errorf("%w: compression method %d at byte %d, only deflate (8) is defined", ErrHeader, h[2], start)
	}
	flg := h[3]
	if flg&0xe0 != 0 {
		return fmt.Errorf("%w: reserved flag bits %#x set at byte %d", ErrHeader, flg, start)
	}
	hcrc := crc32.Update(0, crc32.IEEETable, h[:])
	rd := func() (byte, error) {
		v, err := d.readBits(8)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return 0, fmt.Errorf("%w: truncated gzip header at byte %d", ErrHeader, start)
			}
			return 0, err
		}
		b := byte(v)
		hcrc = crc32.Update(hcrc, crc32.IEEETable, []byte{b})
		return b, nil
	}
	if flg&0x04 != 0 { // FEXTRA
		lo, err := rd()
		if err != nil {
			return err
		}
		hi, err := rd()
		if err != nil {
			return err
		}
		for n := int(lo) | int(hi)<<8; n > 0; n-- {
			if _, err := rd(); err != nil {
				return err
			}
		}
	}
	for _, f := range []byte{0x08, 0x10} { // FNAME, FCOMMENT: zero-terminated
		if flg&f == 0 {
			continue
		}
		for {
			b, err := rd()
			if err != nil {
				return err
			}
			if b == 0 {
				break
			}
		}
	}
	if flg&0x02 != 0 { // FHCRC
		want := hcrc & 0xffff
		v, err := d.readBits(16)
		if err != nil {
			return fmt.Errorf("%w: truncated gzip header at byte %d", ErrHeader, start)
		}
		if uint32(v) != want {
			return fmt.Errorf("%w: header CRC16 %04x, computed %04x at byte %d", ErrHeader, v, want, start)
		}
	}
	return nil
}

func (d *decoder) garbage(start int64) error {
	return fmt.Errorf("%w: data after gzip member %d at byte %d is not a gzip member (trailing garbage)", ErrHeader, d.members, start)
}

func (d *decoder) blockHeader() error {
	tablesOnce.Do(buildTables)
	if err := d.need(3); err != nil {
		return err
	}
	d.final = d.take(1) == 1
	switch d.take(2) {
	case 0:
		d.alignByte()
		v, err := d.readBits(32)
		if err != nil {
			return err
		}
		n, nn := uint16(v), uint16(v>>16)
		if n != ^nn {
			return d.corrupt("stored block length %d does not match its complement %d", n, nn)
		}
		d.stored = int(n)
		d.state = stStored
		if n == 0 {
			d.endBlock()
		}
		return nil
	case 1:
		d.lit, d.dist = &fixedLit, &fixedDist
	case 2:
		if err := d.dynamicTables(); err != nil {
			return err
		}
		d.lit, d.dist = &d.dynLit, &d.dynDist
	default:
		return d.corrupt("reserved block type 3")
	}
	d.state = stHuffman
	return nil
}

func (d *decoder) endBlock() {
	if d.final {
		d.state = stTrailer
	} else {
		d.state = stBlockHeader
	}
}

// clOrder is the order of the code length code lengths (RFC 1951 3.2.7).
var clOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

func (d *decoder) dynamicTables() error {
	v, err := d.readBits(14)
	if err != nil {
		return err
	}
	nlit := int(v&0x1f) + 257
	ndist := int(v>>5&0x1f) + 1
	ncl := int(v>>10) + 4
	if nlit > 286 || ndist > 30 {
		return d.corrupt("too many length (%d) or distance (%d) codes", nlit, ndist)
	}
	var cl [19]uint8
	for i := 0; i < ncl; i++ {
		l, err := d.readBits(3)
		if err != nil {
			return err
		}
		cl[clOrder[i]] = uint8(l)
	}
	if err := d.cl.build(cl[:], clSyms[:], clPrim, true); err != nil {
		return fmt.Errorf("code length code: %w", err)
	}
	lens := d.lens[:nlit+ndist]
	for i := 0; i < len(lens); {
		e, err := d.symbol(&d.cl)
		if err != nil {
			return err
		}
		sym := e.value()
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep int
		var val uint8
		switch sym {
		case 16:
			if i == 0 {
				return d.corrupt("repeat of a code length with no previous length")
			}
			val = lens[i-1]
			r, err := d.readBits(2)
			if err != nil {
				return err
			}
			rep = 3 + int(r)
		case 17:
			r, err := d.readBits(3)
			if err != nil {
				return err
			}
			rep = 3 + int(r)
		default:
			r, err := d.readBits(7)
			if err != nil {
				return err
			}
			rep = 11 + int(r)
		}
		if i+rep > len(lens) {
			return d.corrupt("code length repeat past the end of the code lengths")
		}
		for ; rep > 0; rep-- {
			lens[i] = val
			i++
		}
	}
	if lens[256] == 0 {
		return d.corrupt("no end-of-block code")
	}
	if err := d.dynLit.build(lens[:nlit], litSyms[:], litPrim, false); err != nil {
		return fmt.Errorf("literal/length code: %w", err)
	}
	if err := d.dynDist.build(lens[nlit:], distSyms[:], distPrim, false); err != nil {
		return fmt.Errorf("distance code: %w", err)
	}
	return nil
}

// room is how far wpos may advance in this step.
func (d *decoder) room() int {
	end := len(d.buf)
	if lim := d.want - d.out; lim < int64(end-d.wpos) {
		end = d.wpos + int(max(lim, 0))
	}
	return end
}

// produced accounts for the bytes decoded into buf[from:d.wpos].
func (d *decoder) produced(from int) {
	n := d.wpos - from
	if d.verify {
		d.crc = crc32.Update(d.crc, crc32.IEEETable, d.buf[from:d.wpos])
	}
	d.out += int64(n)
	d.memberOut += int64(n)
}

func (d *decoder) storedBlock() error {
	from := d.wpos
	defer d.produced(from)
	end := d.room()
	for d.stored > 0 && d.wpos < end {
		if d.nbits >= 8 {
			d.buf[d.wpos] = byte(d.take(8))
			d.wpos++
			d.stored--
			continue
		}
		d.bits = 0 // nbits is 0: aligned, and in[inPos:] is read directly below
		if d.inPos == len(d.in) {
			if err := d.fillIn(); err != nil {
				if err == io.EOF {
					return d.truncated()
				}
				return err
			}
		}
		n := copy(d.buf[d.wpos:min(end, d.wpos+d.stored)], d.in[d.inPos:])
		d.inPos += n
		d.wpos += n
		d.stored -= n
	}
	if d.stored == 0 {
		d.endBlock()
	}
	return nil
}

// huffBlock decodes a Huffman block until its end, until buf has no room for
// a longest match, or until want is reached. The loop keeps the bit
// accumulator in locals. While at least eight input bytes are buffered it
// tops the accumulator up without a branch (one unaligned 8-byte load
// leaves 56 to 63 bits) at the top of every iteration and again before a
// match if fewer than 48 bits remain, 48 bits being enough for a
// literal/length code, its extra bits, a distance code and its extra bits;
// runs of literals are decoded in an inner loop while 15 bits (one code)
// remain. Near the end of the buffered input it falls back to slowSymbol,
// which reads exactly as much as each code needs. Matches at a distance of
// 8 or more are copied 8 bytes at a time, 16 at least, which may write up
// to 15 bytes past the match into buf's free space (bytes past wpos are
// never output before being decoded again).
func (d *decoder) huffBlock() error {
	from := d.wpos
	end := d.room()
	limit := len(d.buf) - maxMatch
	if end < limit {
		limit = end - 1 // decode while wpos < end
	}
	lo := d.wpos - int(min(d.memberOut, int64(d.wpos)))
	var err error
	done := false

	bits, nbits := d.bits, d.nbits
	in, inPos := d.in, d.inPos
	buf, wpos := d.buf, d.wpos
	// Every literal/length table has litPrim primary bits and every distance
	// table distPrim (build makes tables at least that long), so their
	// primary parts are fixed-size arrays and the primary lookups need no
	// bounds check; likewise buf is always outBufSize long.
	bp := (*[outBufSize]byte)(buf)
	lp := (*[1 << litPrim]entry)(d.lit.table)
	dp := (*[1 << distPrim]entry)(d.dist.table)
	const lmask = 1<<litPrim - 1
	const dmask = 1<<distPrim - 1
loop:
	for wpos <= limit {
		if inPos+8 > len(in) {
			if nbits < 48 {
				d.bits, d.nbits, d.inPos, d.wpos = bits, nbits, inPos, wpos
				done, err = d.slowSymbol(lo)
				bits, nbits, in, inPos, wpos = d.bits, d.nbits, d.in, d.inPos, d.wpos
				if err != nil || done {
					break loop
				}
				continue
			}
		} else {
			bits |= binary.LittleEndian.Uint64(in[inPos:]) << nbits
			inPos += int((63 - nbits) >> 3)
			nbits |= 56
		}
		// Runs of literals: each code takes at most 15 bits, so a lookup
		// is sound while 15 bits are buffered.
		e := lp[bits&lmask]
		for e.kind() == kindLit {
			bp[wpos&(outBufSize-1)] = byte(e >> 16) // the mask spares a bounds check: wpos <= limit < outBufSize
			wpos++
			n := e.n()
			bits >>= n
			nbits -= n
			if nbits < 15 || wpos > limit {
				continue loop
			}
			e = lp[bits&lmask]
		}
		// A match needs up to 48 bits. Refilling only adds bits above
		// nbits, so e, looked up from 15 or more buffered bits, stays
		// valid; near the end of the input, the top of the loop takes the
		// slow path instead.
		if nbits < 48 {
			if inPos+8 > len(in) {
				continue
			}
			bits |= binary.LittleEndian.Uint64(in[inPos:]) << nbits
			inPos += int((63 - nbits) >> 3)
			nbits |= 56
		}
		if e.kind() == kindLink {
			e = d.lit.table[e.value()+int((bits>>litPrim)&(1<<e.extra()-1))]
		}
		n := e.n()
		var length int
		switch e.kind() {
		case kindLit:
			bits >>= n
			nbits -= n
			buf[wpos] = byte(e >> 16)
			wpos++
			continue
		case kindBase:
			// The code and its extra bits leave the accumulator in one shift.
			ex := e.extra()
			length = e.value() + int((bits>>n)&(1<<ex-1))
			bits >>= (n + ex) & 63
			nbits -= n + ex
		case kindEOB:
			bits >>= n
			nbits -= n
			done = true
			break loop
		default:
			bits >>= n
			nbits -= n
			d.bits, d.nbits, d.inPos, d.wpos = bits, nbits, inPos, wpos
			err = d.corrupt("invalid literal/length code")
			break loop
		}

		de := dp[bits&dmask]
		if de.kind() == kindLink {
			de = d.dist.table[de.value()+int((bits>>distPrim)&(1<<de.extra()-1))]
		}
		if de.kind() != kindBase {
			d.bits, d.nbits, d.inPos, d.wpos = bits, nbits, inPos, wpos
			err = d.corrupt("invalid distance code")
			break loop
		}
		n = de.n()
		ex := de.extra()
		dist := de.value() + int((bits>>n)&(1<<ex-1))
		bits >>= (n + ex) & 63
		nbits -= n + ex
		if dist > wpos-lo {
			d.bits, d.nbits, d.inPos, d.wpos = bits, nbits, inPos, wpos
			err = d.corrupt("distance %d reaches before the start of the data", dist)
			break loop
		}
		src := wpos - dist
		switch {
		case dist >= 8 && wpos+length+16 <= len(buf):
			// Each 8-byte load ends at or before the store's start, so
			// overlapping matches repeat correctly. The first 16 bytes are
			// copied unconditionally: most matches are no longer.
			to := buf[wpos : wpos+length+16]
			hist := buf[src : src+length+16]
			binary.LittleEndian.PutUint64(to, binary.LittleEndian.Uint64(hist))
			binary.LittleEndian.PutUint64(to[8:], binary.LittleEndian.Uint64(hist[8:]))
			for i := 16; i < length; i += 8 {
				binary.LittleEndian.PutUint64(to[i:], binary.LittleEndian.Uint64(hist[i:]))
			}
			wpos += length
		case dist >= length:
			copy(buf[wpos:wpos+length], buf[src:src+length])
			wpos += length
		default:
			e := wpos + length
			for wpos < e {
				wpos += copy(buf[wpos:e], buf[src:wpos])
			}
		}
	}
	if err == nil {
		d.bits, d.nbits, d.inPos, d.wpos = bits, nbits, inPos, wpos
	}
	d.in = in
	d.produced(from)
	if done && err == nil {
		d.endBlock()
	}
	return err
}

// slowSymbol decodes one literal or match near the end of the buffered input.
func (d *decoder) slowSymbol(lo int) (done bool, err error) {
	e, err := d.symbol(d.lit)
	if err != nil {
		return false, err
	}
	switch e.kind() {
	case kindLit:
		d.buf[d.wpos] = byte(e >> 16)
		d.wpos++
		return false, nil
	case kindEOB:
		return true, nil
	}
	v, err := d.readBits(e.extra())
	if err != nil {
		return false, err
	}
	length := e.value() + int(v)
	de, err := d.symbol(d.dist)
	if err != nil {
		return false, err
	}
	v, err = d.readBits(de.extra())
	if err != nil {
		return false, err
	}
	dist := de.value() + int(v)
	if dist > d.wpos-lo {
		return false, d.corrupt("distance %d reaches before the start of the data", dist)
	}
	src := d.wpos - dist
	end := d.wpos + length
	for d.wpos < end {
		d.wpos += copy(d.buf[d.wpos:end], d.buf[src:d.wpos])
	}
	return false, nil
}

// slide moves the last windowSize bytes of history to the front of buf once
// everything decoded has been handed out and too little room is left.
func (d *decoder) slide() {
	if d.wpos <= len(d.buf)-maxMatch || d.rpos < d.wpos {
		return
	}
	copy(d.buf, d.buf[d.wpos-windowSize:d.wpos])
	d.wpos = windowSize
	d.rpos = windowSize
}

// Read implements io.Reader over the decoded stream.
func (d *decoder) Read(p []byte) (int, error) {
	for d.rpos == d.wpos {
		if d.err != nil {
			return 0, d.err
		}
		if d.state == stDone {
			return 0, io.EOF
		}
		d.slide()
		d.err = d.step()
	}
	n := copy(p, d.buf[d.rpos:d.wpos])
	d.rpos += n
	return n, nil
}
