package gzran

import (
	"bytes"
	"compress/flate"

	"errors"
	"fmt"
	kflate "github.com/klauspost/compress/flate"
	"io"
	"slices"
	"sort"
)

// Errors. Each is wrapped with the position or value that failed; test with
// errors.Is.
var (
	// ErrHeader reports a malformed gzip member header, or data after the
	// last member that is not another member.
	ErrHeader = errors.New("gzran: invalid gzip header")
	// ErrCorrupt reports invalid DEFLATE data.
	ErrCorrupt = errors.New("gzran: corrupt deflate data")
	// ErrChecksum reports a member whose CRC-32 or ISIZE trailer does not
	// match the decoded data.
	ErrChecksum = errors.New("gzran: gzip checksum mismatch")
	// ErrIndex reports an index that fails its checksum, has an unknown
	// version or does not describe the blob it is used with.
	ErrIndex = errors.New("gzran: invalid index")
)

// DefaultSpan is the default distance, in uncompressed bytes, between
// checkpoints. See the package documentation for the measured trade-off.
const DefaultSpan = 4 << 20

// Index locates DEFLATE block boundaries in a gzip stream so that reading
// can start near any uncompressed offset. An Index is immutable and safe for
// concurrent use.
type Index struct {
	span   int64
	csize  int64 // compressed size of the whole stream
	usize  int64 // uncompressed size of the whole stream
	points []point
	marks  []mark // block boundaries without windows, to end spans early

	// detached: the windows are not in points; windowFn supplies them
	// (nil: a read that needs one fails with ErrNoWindow).
	detached bool
	windowFn WindowFunc
}

// WindowFunc returns the stored window of checkpoint i of a detached
// index: exactly the bytes Windows()[i] of the index it was detached from.
// The caller is responsible for their integrity (a digest per window, say);
// the Reader checks only that they inflate to the recorded length.
type WindowFunc func(i int) ([]byte, error)

// ErrNoWindow reports a read of a detached index without a WindowFunc.
var ErrNoWindow = errors.New("gzran: index has no windows")

// Windows returns every checkpoint's stored window (its 32 KiB of history,
// raw-DEFLATE compressed), in checkpoint order: what Detach leaves out. It
// returns nil for a detached index. The slices alias the index; do not
// modify them.
func (ix *Index) Windows() [][]byte {
	if ix.detached {
		return nil
	}
	out := make([][]byte, len(ix.points))
	for i := range ix.points {
		out[i] = ix.points[i].win
	}
	return out
}

// Detach returns a copy of ix without its windows, which are most of an
// index's size: it marshals without them (a few bytes per checkpoint), and
// reads through it need a WindowFunc (WithWindows). A reader of a remote
// blob keeps the small detached index and fetches the one window a read
// starts from.
func (ix *Index) Detach() *Index {
	cp := *ix
	cp.points = make([]point, len(ix.points))
	for i, p := range ix.points {
		p.win = nil
		cp.points[i] = p
	}
	cp.detached = true
	cp.windowFn = nil
	return &cp
}

// Detached reports whether the index was made by Detach (or unmarshalled
// from one).
func (ix *Index) Detached() bool { return ix.detached }

// WithWindows returns a copy of the detached index ix whose Readers get
// checkpoint windows from fn. It panics if ix is not detached.
func (ix *Index) WithWindows(fn WindowFunc) *Index {
	if !ix.detached {
		panic("gzran: WithWindows on an index that has its windows")
	}
	cp := *ix
	cp.windowFn = fn
	return &cp
}

// CheckpointAt returns the number of the checkpoint a read at uncompressed
// offset off inflates from (the last one at or before off), or -1 when off
// is outside the stream.
func (ix *Index) CheckpointAt(off int64) int {
	if off < 0 || off >= ix.usize || len(ix.points) == 0 {
		return -1
	}
	return ix.locate(off)
}

// mark is a block boundary recorded only to bound CompressedSpan: one is
// kept every span/markRatio bytes of output (at least minMarkGap apart), so
// a read's compressed span ends near its last byte rather than at the next
// checkpoint, while a stream of tiny blocks cannot grow the index.
type mark struct {
	bit int64
	out int64
}

const (
	markRatio  = 16
	minMarkGap = 16 << 10
)

func markGap(span int64) int64 { return max(span/markRatio, minMarkGap) }

type point struct {
	bit  int64  // absolute compressed bit offset of the block's first bit
	out  int64  // uncompressed offset of the block's first byte
	wlen int    // raw window length (≤ 32 KiB; less near the start of a member)
	win  []byte // the window, raw-DEFLATE compressed
}

// Checkpoint describes one entry of an Index.
type Checkpoint struct {
	// CompressedOffset is the byte of the compressed stream that holds the
	// first bit of the block.
	CompressedOffset int64
	// Bit is the number of low-order bits of that byte that still belong to
	// the previous block (0-7); the block starts at the next bit.
	Bit uint8
	// UncompressedOffset is the offset of the block's first output byte.
	UncompressedOffset int64
	// WindowSize is the length of the saved history, 32 KiB except near the
	// start of a gzip member.
	WindowSize int
}

// Span returns the checkpoint spacing the index was built with.
func (ix *Index) Span() int64 { return ix.span }

// CompressedSize returns the size of the gzip stream the index describes.
func (ix *Index) CompressedSize() int64 { return ix.csize }

// UncompressedSize returns the size of the decompressed stream.
func (ix *Index) UncompressedSize() int64 { return ix.usize }

// Checkpoints returns the index entries in order.
func (ix *Index) Checkpoints() []Checkpoint {
	cs := make([]Checkpoint, len(ix.points))
	for i, p := range ix.points {
		cs[i] = Checkpoint{
			CompressedOffset:   p.bit / 8,
			Bit:                uint8(p.bit % 8),
			UncompressedOffset: p.out,
			WindowSize:         p.wlen,
		}
	}
	return cs
}

// locate returns the index of the last checkpoint at or before off.
func (ix *Index) locate(off int64) int {
	return sort.Search(len(ix.points), func(i int) bool { return ix.points[i].out > off }) - 1
}

// CompressedSpan returns the compressed byte range [cstart, cend) that
// reading the uncompressed range [off, off+n) touches: from the checkpoint
// at or before off to the first recorded block boundary at or after off+n
// (or the end of the stream). A Reader given only those bytes can serve the
// range. An empty or out-of-range request returns (0, 0).
func (ix *Index) CompressedSpan(off, n int64) (cstart, cend int64) {
	if off < 0 || n <= 0 || off >= ix.usize || len(ix.points) == 0 {
		return 0, 0
	}
	end := off + min(n, ix.usize-off)
	i := ix.locate(off)
	cstart = ix.points[i].bit / 8
	cend = ix.csize
	j := sort.Search(len(ix.points), func(j int) bool { return ix.points[j].out >= end })
	if j < len(ix.points) {
		cend = (ix.points[j].bit + 7) / 8
	}
	k := sort.Search(len(ix.marks), func(k int) bool { return ix.marks[k].out >= end })
	if k < len(ix.marks) {
		cend = min(cend, (ix.marks[k].bit+7)/8)
	}
	return cstart, cend
}

// builder records checkpoints while a decoder inflates a whole stream.
type builder struct {
	span   int64
	points []point
	marks  []mark
	fw     *kflate.Writer
	buf    bytes.Buffer

	// want are offsets (ascending) that get a checkpoint at the last
	// block boundary at or before them; prev is that boundary's state,
	// kept at every boundary while offsets remain.
	want []int64
	prev struct {
		ok       bool
		bit, out int64
		win      []byte
	}
}

func (b *builder) lastMark() int64 {
	if len(b.marks) == 0 {
		return 0
	}
	return b.marks[len(b.marks)-1].out
}

func (b *builder) onBlock(d *decoder) error {
	if len(b.want) > 0 {
		if err := b.wanted(d); err != nil {
			return err
		}
	}
	if n := len(b.points); n > 0 && d.out-b.points[n-1].out < b.span {
		if d.out-max(b.points[n-1].out, b.lastMark()) >= markGap(b.span) {
			b.marks = append(b.marks, mark{bit: d.bitPos(), out: d.out})
		}
		return nil
	}
	return b.record(d.bitPos(), d.out, d.buf[d.wpos-int(min(d.memberOut, windowSize)):d.wpos])
}

// wanted records the previous block boundary as a checkpoint when the
// block that ends here holds a wanted offset, and keeps this boundary's
// state for the next block.
func (b *builder) wanted(d *decoder) error {
	for len(b.want) > 0 && b.want[0] < d.out {
		if b.prev.ok && b.prev.out <= b.want[0] {
			if n := len(b.points); n == 0 || b.points[n-1].out < b.prev.out {
				if err := b.record(b.prev.bit, b.prev.out, b.prev.win); err != nil {
					return err
				}
			}
		}
		b.want = b.want[1:]
	}
	if len(b.want) == 0 {
		b.prev.ok, b.prev.win = false, nil
		return nil
	}
	w := int(min(d.memberOut, windowSize))
	b.prev.ok, b.prev.bit, b.prev.out = true, d.bitPos(), d.out
	b.prev.win = append(b.prev.win[:0], d.buf[d.wpos-w:d.wpos]...)
	return nil
}

// record appends a checkpoint at compressed bit bit and output offset out,
// whose window (history) is win.
func (b *builder) record(bit, out int64, win []byte) error {
	w := len(win)
	b.buf.Reset()
	// klauspost's level 6 packs windows within 2% of compress/flate's
	// default level at a fraction of its CPU time.
	if b.fw == nil {
		b.fw, _ = kflate.NewWriter(&b.buf, 6)
	} else {
		b.fw.Reset(&b.buf)
	}
	if _, err := b.fw.Write(win); err != nil {
		return fmt.Errorf("compressing checkpoint window: %w", err)
	}
	if err := b.fw.Close(); err != nil {
		return fmt.Errorf("compressing checkpoint window: %w", err)
	}
	b.points = append(b.points, point{
		bit:  bit,
		out:  out,
		wlen: w,
		win:  bytes.Clone(b.buf.Bytes()),
	})
	return nil
}

// Indexer decompresses a gzip stream and builds its Index in the same pass.
// Read returns the uncompressed bytes; every member's CRC-32 and ISIZE are
// verified. Concatenated (multi-member) gzip streams are read as one stream.
type Indexer struct {
	d   *decoder
	b   builder
	ix  *Index
	err error
}

// NewIndexer returns an Indexer reading the gzip stream r, placing a
// checkpoint at the first block boundary after every span bytes of output
// (DefaultSpan if span ≤ 0).
func NewIndexer(r io.Reader, span int64) *Indexer {
	if span <= 0 {
		span = DefaultSpan
	}
	x := &Indexer{d: newDecoder(), b: builder{span: span}}
	x.d.resetStream(r)
	x.d.onBlock = x.b.onBlock
	return x
}

// Read implements io.Reader, returning the decompressed stream.
func (x *Indexer) Read(p []byte) (int, error) {
	n, err := x.d.Read(p)
	if err == io.EOF {
		x.finish()
	}
	return n, err
}

// WriteTo implements io.WriterTo, writing the decompressed stream to w
// without an intermediate copy.
func (x *Indexer) WriteTo(w io.Writer) (int64, error) {
	var total int64
	d := x.d
	for {
		if d.rpos < d.wpos {
			n, err := w.Write(d.buf[d.rpos:d.wpos])
			d.rpos += n
			total += int64(n)
			if err != nil {
				return total, err
			}
			continue
		}
		if d.err != nil {
			return total, d.err
		}
		if d.state == stDone {
			x.finish()
			return total, nil
		}
		d.slide()
		d.err = d.step()
	}
}

func (x *Indexer) finish() {
	if x.ix != nil {
		return
	}
	d := x.d
	x.ix = &Index{
		span:   x.b.span,
		csize:  d.bitPos() / 8,
		usize:  d.out,
		points: x.b.points,
		marks:  x.b.marks,
	}
}

// Index returns the finished index. It fails unless the stream has been read
// to io.EOF without error.
func (x *Indexer) Index() (*Index, error) {
	if x.d.err != nil && x.d.err != io.EOF {
		return nil, fmt.Errorf("gzran: no index: the gzip stream failed: %w", x.d.err)
	}
	if x.ix == nil {
		return nil, errors.New("gzran: index not complete: read the stream to EOF first")
	}
	return x.ix, nil
}

// BuildIndex reads the whole gzip stream r and returns its index, discarding
// the decompressed bytes.
func BuildIndex(r io.Reader, span int64) (*Index, error) {
	return BuildIndexAt(r, span, nil)
}

// BuildIndexAt is BuildIndex with a checkpoint also at the last block
// boundary at or before each uncompressed offset in at: a read known in
// advance to start there (a file a command reads at start) then inflates
// less than a block before it instead of up to span bytes. Offsets need
// not be sorted; it costs one 32 KiB copy per block while offsets remain.
func BuildIndexAt(r io.Reader, span int64, at []int64) (*Index, error) {
	x := NewIndexer(r, span)
	if len(at) > 0 {
		want := slices.Clone(at)
		slices.Sort(want)
		x.b.want = slices.Compact(want)
	}
	if _, err := x.WriteTo(io.Discard); err != nil {
		return nil, err
	}
	return x.Index()
}

// window inflates checkpoint k's saved history into dst.
func (ix *Index) window(k int, dst []byte) error {
	p := &ix.points[k]
	win := p.win
	if ix.detached {
		if ix.windowFn == nil {
			return fmt.Errorf("%w: the window of checkpoint %d (uncompressed offset %d) is needed; give the index a WindowFunc", ErrNoWindow, k, p.out)
		}
		var err error
		if win, err = ix.windowFn(k); err != nil {
			return fmt.Errorf("window of checkpoint %d (uncompressed offset %d): %w", k, p.out, err)
		}
	}
	fr := flate.NewReader(bytes.NewReader(win))
	defer fr.Close()
	if _, err := io.ReadFull(fr, dst[:p.wlen]); err != nil {
		return fmt.Errorf("%w: window of checkpoint at uncompressed offset %d: %v; rebuild the index", ErrIndex, p.out, err)
	}
	if n, _ := fr.Read(make([]byte, 1)); n != 0 {
		return fmt.Errorf("%w: window of checkpoint at uncompressed offset %d is longer than recorded; rebuild the index", ErrIndex, p.out)
	}
	return nil
}
