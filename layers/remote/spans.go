package remote

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"slices"
	"sort"

	"github.com/dabba/dabba/layers/gzran"
)

// MaxSpanSize caps the compressed bytes of one Span. A read fetches whole
// spans (it can only verify whole ones), so it fetches up to a span beyond
// the end of what gzran.Index.CompressedSpan names: cut into pieces of at
// most 64 KiB, on average 32 KiB, for 32 bytes of digest per 64 KiB
// (0.05%) in the index. (Ends of reads known in advance get spans of their
// own: BuildSpansCut.)
const MaxSpanSize = 64 << 10

// Span is a range [Start, End) of a compressed blob and the SHA-256 of its
// bytes.
type Span struct {
	Start, End int64
	Digest     Digest
}

// BuildSpans cuts the blob (size bytes, read from blob) into spans that
// start at every checkpoint of gz and are at most MaxSpanSize long, and
// digests each. The spans cover the whole blob, in order. gz must be the
// index of this blob.
func BuildSpans(blob io.ReaderAt, size int64, gz *gzran.Index) ([]Span, error) {
	return BuildSpansCut(blob, size, gz, nil)
}

// BuildSpansCut is BuildSpans with spans also ending at each compressed
// offset in cuts: where a read known in advance ends (gzran's
// CompressedSpan of a prefetch range), so that fetching it verified takes
// no bytes beyond its end.
func BuildSpansCut(blob io.ReaderAt, size int64, gz *gzran.Index, cuts []int64) ([]Span, error) {
	if gz.CompressedSize() != size {
		return nil, fmt.Errorf("%w: index is for a %d-byte blob, blob has %d bytes", gzran.ErrIndex, gz.CompressedSize(), size)
	}
	all := slices.Clone(cuts)
	for _, c := range gz.Checkpoints() {
		all = append(all, c.CompressedOffset)
	}
	slices.Sort(all)
	bounds := []int64{0}
	for _, c := range all {
		if c > bounds[len(bounds)-1] && c < size {
			bounds = append(bounds, c)
		}
	}
	bounds = append(bounds, size)
	var spans []Span
	buf := make([]byte, MaxSpanSize)
	for i := 0; i+1 < len(bounds); i++ {
		a, b := bounds[i], bounds[i+1]
		n := (b - a + MaxSpanSize - 1) / MaxSpanSize // pieces of equal size
		for k := int64(0); k < n; k++ {
			s := Span{Start: a + (b-a)*k/n, End: a + (b-a)*(k+1)/n}
			p := buf[:s.End-s.Start]
			if _, err := blob.ReadAt(p, s.Start); err != nil && !(err == io.EOF && s.End == size) {
				return nil, fmt.Errorf("reading blob bytes %d-%d: %w", s.Start, s.End-1, err)
			}
			s.Digest = sha256.Sum256(p)
			spans = append(spans, s)
		}
	}
	return spans, nil
}

// SpanIndex is what a lazy reader needs, beside the gzran index, to read a
// gzip layer from a registry: the spans of its compressed blob and their
// digests. It travels in the dabba index artifact.
type SpanIndex struct {
	// Size is the compressed blob's size.
	Size  int64
	Spans []Span
}

// Check reports whether the spans cover [0, Size) in order, without gaps.
func (s *SpanIndex) Check() error {
	var at int64
	for i, sp := range s.Spans {
		if sp.Start != at || sp.End <= sp.Start {
			return fmt.Errorf("%w: span %d is %d-%d, expected to start at %d", ErrSpanIndex, i, sp.Start, sp.End, at)
		}
		at = sp.End
	}
	if at != s.Size {
		return fmt.Errorf("%w: spans end at %d, blob has %d bytes", ErrSpanIndex, at, s.Size)
	}
	return nil
}

// covering returns the indexes [i, j) of the spans holding bytes
// [start, end).
func (s *SpanIndex) covering(start, end int64) (int, int) {
	i := sort.Search(len(s.Spans), func(i int) bool { return s.Spans[i].End > start })
	j := sort.Search(len(s.Spans), func(j int) bool { return s.Spans[j].Start >= end })
	return i, j
}

// ErrSpanIndex reports a span index that is damaged, of another version,
// or not for the blob it is used with.
var ErrSpanIndex = errors.New("remote: invalid span index")

// Serialised span index, version 1:
//
//	magic "DBBASPN" version(1 byte)
//	uvarint Size, uvarint count
//	count × (uvarint length, 32-byte SHA-256)
//	crc32 (IEEE, 4 bytes little-endian) of everything before it
const (
	spanMagic   = "DBBASPN"
	spanVersion = 1
)

// MarshalBinary implements encoding.BinaryMarshaler.
func (s *SpanIndex) MarshalBinary() ([]byte, error) {
	if err := s.Check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 16+len(s.Spans)*36)
	b = append(b, spanMagic...)
	b = append(b, spanVersion)
	b = binary.AppendUvarint(b, uint64(s.Size))
	b = binary.AppendUvarint(b, uint64(len(s.Spans)))
	for _, sp := range s.Spans {
		b = binary.AppendUvarint(b, uint64(sp.End-sp.Start))
		b = append(b, sp.Digest[:]...)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

// UnmarshalBinary implements encoding.BinaryUnmarshaler; damaged data or
// another version gives an error wrapping ErrSpanIndex.
func (s *SpanIndex) UnmarshalBinary(data []byte) error {
	if len(data) < len(spanMagic)+1+4 || string(data[:len(spanMagic)]) != spanMagic {
		return fmt.Errorf("%w: not a span index", ErrSpanIndex)
	}
	if v := data[len(spanMagic)]; v != spanVersion {
		return fmt.Errorf("%w: version %d, want %d (rebuild the index with `dabba index push`)", ErrSpanIndex, v, spanVersion)
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return fmt.Errorf("%w: checksum mismatch", ErrSpanIndex)
	}
	b := body[len(spanMagic)+1:]
	bad := fmt.Errorf("%w: malformed", ErrSpanIndex)
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	size, ok1 := uv()
	count, ok2 := uv()
	if !ok1 || !ok2 || size > math.MaxInt64 || count > uint64(len(b))/33 {
		return bad
	}
	out := SpanIndex{Size: int64(size), Spans: make([]Span, 0, count)}
	var at int64
	for i := uint64(0); i < count; i++ {
		n, ok := uv()
		if !ok || n == 0 || n > uint64(out.Size-at) || len(b) < sha256.Size {
			return bad
		}
		sp := Span{Start: at, End: at + int64(n)}
		copy(sp.Digest[:], b)
		b = b[sha256.Size:]
		out.Spans = append(out.Spans, sp)
		at = sp.End
	}
	if len(b) != 0 {
		return bad
	}
	if err := out.Check(); err != nil {
		return err
	}
	*s = out
	return nil
}

func logCacheError(err error) {
	slog.Warn("chunk cache not written", "stage", "fetch", "err", err)
}

// BuildWindows lays the windows of gz (gzran.Index.Windows, each the
// checkpoint's 32 KiB of history, compressed) out as one blob, one span per
// checkpoint with its digest: the windows blob a Windows reads for a
// detached copy of gz (gz.Detach()). gz must have its windows.
func BuildWindows(gz *gzran.Index) ([]byte, *SpanIndex, error) {
	if gz.Detached() {
		return nil, nil, fmt.Errorf("%w: the gzip index has no windows to lay out", ErrSpanIndex)
	}
	var blob []byte
	idx := &SpanIndex{}
	for i, w := range gz.Windows() {
		if len(w) == 0 {
			return nil, nil, fmt.Errorf("%w: window of checkpoint %d is empty", ErrSpanIndex, i)
		}
		start := int64(len(blob))
		blob = append(blob, w...)
		idx.Spans = append(idx.Spans, Span{Start: start, End: int64(len(blob)), Digest: sha256.Sum256(w)})
	}
	idx.Size = int64(len(blob))
	return blob, idx, nil
}
