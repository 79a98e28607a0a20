package gzran

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// maxIdle is how many paused decoders a Reader keeps, so sequential and
// interleaved reads continue where the last read stopped instead of
// inflating again from a checkpoint.
const maxIdle = 4

// Prefetcher is an optional capability of the io.ReaderAt given to
// NewReaderAt, found by type assertion. Before serving a ReadAt, the Reader
// calls Prefetch with the compressed bytes it is about to read (a sub-range
// of CompressedSpan), so a remote fetcher can get them in one request
// instead of in the Reader's 64 KiB reads.
type Prefetcher interface {
	Prefetch(off, n int64) error
}

// Reader reads the uncompressed stream at any offset, using an Index and
// the compressed blob. It is safe for concurrent use.
//
// Reads of part of a member cannot check the member's CRC-32: integrity of
// the bytes returned rests on the compressed bytes being the ones the index
// was built from (a digest-verified blob, or per-span digests checked by the
// caller). Corrupt input is still detected wherever it breaks DEFLATE.
type Reader struct {
	ix *Index
	r  io.ReaderAt

	mu   sync.Mutex
	idle []*decoder // most recently used last
}

// NewReaderAt returns a Reader of the uncompressed stream, reading
// compressed bytes from r, which must hold the compressedSize bytes of the
// stream the index was built from.
func (ix *Index) NewReaderAt(r io.ReaderAt, compressedSize int64) (*Reader, error) {
	if compressedSize != ix.csize {
		return nil, fmt.Errorf("%w: index is for a %d-byte gzip stream, blob has %d bytes; rebuild the index for this blob", ErrIndex, ix.csize, compressedSize)
	}
	return &Reader{ix: ix, r: r}, nil
}

// Size returns the uncompressed size.
func (r *Reader) Size() int64 { return r.ix.usize }

// ReadAt implements io.ReaderAt over the uncompressed stream.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("gzran: read at negative offset %d", off)
	}
	if off >= r.ix.usize {
		return 0, io.EOF
	}
	want := p
	if rest := r.ix.usize - off; int64(len(p)) > rest {
		want = p[:rest]
	}
	if len(want) == 0 {
		return 0, nil
	}
	_, cend := r.ix.CompressedSpan(off, int64(len(want)))
	d, err := r.get(off, cend)
	if err != nil {
		return 0, err
	}
	if pf, ok := r.r.(Prefetcher); ok {
		// The decoder has consumed its input up to src.pos; it needs the
		// rest of the span.
		if from := d.src.(*rangeSource).pos; from < cend {
			if err := pf.Prefetch(from, cend-from); err != nil {
				return 0, fmt.Errorf("prefetching compressed bytes [%d,%d): %w", from, cend, err)
			}
		}
	}
	n, err := d.readAt(want, off)
	if err != nil {
		return n, fmt.Errorf("reading uncompressed offset %d: %w", off+int64(n), err)
	}
	r.put(d)
	if len(want) < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// get returns a decoder able to serve off: an idle one already positioned
// at or past the checkpoint for off and whose history still covers off, or
// one reset to that checkpoint. Its compressed reads stop at limit while
// they can.
func (r *Reader) get(off, limit int64) (*decoder, error) {
	k := r.ix.locate(off)
	ck := &r.ix.points[k]
	r.mu.Lock()
	best, bestCost := -1, int64(0)
	for i, d := range r.idle {
		if d.out-int64(d.wpos) > off || d.out < ck.out {
			continue // history no longer covers off, or the checkpoint is nearer
		}
		if cost := max(0, off-d.out); best < 0 || cost < bestCost {
			best, bestCost = i, cost
		}
	}
	var d *decoder
	if best >= 0 {
		d = r.idle[best]
		r.idle = append(r.idle[:best], r.idle[best+1:]...)
		r.mu.Unlock()
		d.src.(*rangeSource).limit = limit
		return d, nil
	}
	if len(r.idle) > 0 {
		d = r.idle[0] // reuse the least recently used decoder's memory
		r.idle = r.idle[1:]
	}
	r.mu.Unlock()
	if d == nil {
		d = newDecoder()
	}
	if err := r.resume(d, k, limit); err != nil {
		return nil, err
	}
	return d, nil
}

func (r *Reader) put(d *decoder) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.idle) >= maxIdle {
		r.idle = r.idle[1:]
	}
	r.idle = append(r.idle, d)
}

// resume positions d at checkpoint ck.
func (r *Reader) resume(d *decoder, k int, limit int64) error {
	ck := &r.ix.points[k]
	if err := r.ix.window(k, d.buf); err != nil {
		return err
	}
	start := ck.bit / 8
	d.resetInput(&rangeSource{r: r.r, pos: start, limit: limit, end: r.ix.csize}, start)
	d.skip = uint(ck.bit % 8) // read in readAt, after any Prefetch
	d.rpos, d.wpos = ck.wlen, ck.wlen
	d.out = ck.out
	d.memberOut = int64(ck.wlen)
	d.state = stBlockHeader
	d.final = false
	d.verify = false
	d.members = 1
	d.err = nil
	d.onBlock = nil
	return nil
}

// readAt fills p with the uncompressed bytes at off, which must not be
// before the oldest byte d holds (d.out - d.wpos).
func (d *decoder) readAt(p []byte, off int64) (int, error) {
	total := 0
	if d.skip > 0 {
		if _, err := d.readBits(d.skip); err != nil {
			return 0, err
		}
		d.skip = 0
	}
	for len(p) > 0 {
		start := d.out - int64(d.wpos) // uncompressed offset of buf[0]
		if off < start {
			return total, errors.New("gzran: internal error: decoder is past the requested offset")
		}
		if off < d.out {
			n := copy(p, d.buf[off-start:d.wpos])
			p = p[n:]
			off += int64(n)
			total += n
			continue
		}
		d.rpos = d.wpos
		if d.state == stDone {
			return total, fmt.Errorf("%w: gzip stream ended at uncompressed offset %d, before the size the index records; rebuild the index", ErrIndex, d.out)
		}
		d.want = off + int64(len(p))
		d.slide()
		if err := d.step(); err != nil {
			return total, err
		}
	}
	d.rpos = d.wpos
	return total, nil
}

// rangeSource reads [pos, end) of a ReaderAt sequentially. Reads stop at
// limit while pos is below it, so a decoder asked for a range reads only the
// compressed bytes CompressedSpan names (a remote fetcher then sees no
// read-ahead); past limit it reads on, in case the caller's range was wider.
type rangeSource struct {
	r               io.ReaderAt
	pos, limit, end int64
}

func (s *rangeSource) Read(p []byte) (int, error) {
	if s.pos >= s.end {
		return 0, io.EOF
	}
	n := int64(len(p))
	if s.pos < s.limit && s.limit-s.pos < n {
		n = s.limit - s.pos
	}
	if s.end-s.pos < n {
		n = s.end - s.pos
	}
	m, err := s.r.ReadAt(p[:n], s.pos)
	s.pos += int64(m)
	if int64(m) == n {
		return m, nil
	}
	if err == io.EOF || err == nil {
		return m, fmt.Errorf("compressed blob ends at byte %d, before its recorded size %d: %w", s.pos, s.end, io.ErrUnexpectedEOF)
	}
	return m, err
}
