package remote

import (
	"context"
	"fmt"
	"io"

	"github.com/dabba/dabba/layers/gzran"
)

// GzipLayer reads a gzip layer with a dabba index (its gzran.Index and
// SpanIndex) from a registry: an io.ReaderAt over the layer's uncompressed
// tar stream, at the offsets layers.Index records. A read fetches only the
// spans of compressed bytes its range needs (from the gzran checkpoint at
// or before it), verifies each against its digest, caches it, and
// inflates from the checkpoint. It is safe for concurrent use.
type GzipLayer struct {
	gz    *gzran.Index
	spans *SpanIndex
	v     *verifier
	r     *gzran.Reader
	ctx   context.Context
}

// NewGzipLayer returns the reader of the layer fetched by f, described by
// gz and spans, caching verified spans in cache (nil for none).
func NewGzipLayer(f *Fetcher, gz *gzran.Index, spans *SpanIndex, cache *Cache) (*GzipLayer, error) {
	if err := spans.Check(); err != nil {
		return nil, fmt.Errorf("layer %s: %w", f.digest, err)
	}
	if spans.Size != f.size || gz.CompressedSize() != f.size {
		return nil, fmt.Errorf("layer %s: %w: blob has %d bytes, span index %d, gzip index %d; rebuild the index with `dabba index push`",
			f.digest, ErrSpanIndex, f.size, spans.Size, gz.CompressedSize())
	}
	l := &GzipLayer{gz: gz, spans: spans, v: newVerifier(f, cache), ctx: f.ctx}
	r, err := gz.NewReaderAt(spanReader{l}, f.size)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", f.digest, err)
	}
	l.r = r
	return l, nil
}

// Size returns the size of the uncompressed tar stream.
func (l *GzipLayer) Size() int64 { return l.gz.UncompressedSize() }

// ReadAt implements io.ReaderAt over the uncompressed tar stream. An error
// wrapping ErrVerify means the registry sent damaged bytes twice.
func (l *GzipLayer) ReadAt(p []byte, off int64) (int, error) {
	return l.ReadAtContext(l.ctx, p, off)
}

// ReadAtContext is ReadAt with a context for the fetches it makes.
func (l *GzipLayer) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	// Fetch every span the range needs at once (coalesced, in parallel);
	// the decoder's 64 KiB reads then find them in memory.
	if err := l.Prefetch(ctx, off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := l.r.ReadAt(p, off)
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("layer %s: %w", l.v.f.digest, err)
	}
	return n, err
}

// Prefetch fetches, verifies and caches the spans that reading the
// uncompressed range [off, off+n) needs.
func (l *GzipLayer) Prefetch(ctx context.Context, off, n int64) error {
	cstart, cend := l.gz.CompressedSpan(off, n)
	if cend <= cstart {
		return nil
	}
	_, err := l.spanBytes(ctx, cstart, cend)
	return err
}

// PrefetchAll fetches every span into the cache (the background fetch;
// without a cache it only checks that the registry serves the blob),
// 16 MiB at a time so that memory stays small.
func (l *GzipLayer) PrefetchAll(ctx context.Context) error {
	const batch = 16 << 20
	for off := int64(0); off < l.spans.Size; off += batch {
		if _, err := l.spanBytes(ctx, off, min(off+batch, l.spans.Size)); err != nil {
			return err
		}
	}
	return nil
}

// spanBytes returns the verified spans covering [start, end).
func (l *GzipLayer) spanBytes(ctx context.Context, start, end int64) ([]Span, error) {
	i, j := l.spans.covering(start, end)
	ps := make([]piece, j-i)
	for k := i; k < j; k++ {
		sp := l.spans.Spans[k]
		k := k
		ps[k-i] = piece{start: sp.Start, end: sp.End, digest: sp.Digest, name: func() string { return fmt.Sprintf("span %d", k) }}
	}
	_, err := l.v.get(ctx, ps)
	return l.spans.Spans[i:j], err
}

// spanReader is the io.ReaderAt of verified compressed bytes the gzran
// Reader inflates from.
type spanReader struct{ l *GzipLayer }

func (s spanReader) ReadAt(p []byte, off int64) (int, error) {
	l := s.l
	if off >= l.spans.Size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), l.spans.Size)
	i, j := l.spans.covering(off, end)
	ps := make([]piece, 0, j-i)
	for k := i; k < j; k++ {
		sp := l.spans.Spans[k]
		k := k
		ps = append(ps, piece{start: sp.Start, end: sp.End, digest: sp.Digest, name: func() string { return fmt.Sprintf("span %d", k) }})
	}
	datas, err := l.v.get(l.ctx, ps)
	if err != nil {
		return 0, err
	}
	n := 0
	for k, d := range datas {
		sp := l.spans.Spans[i+k]
		from := max(off, sp.Start)
		n += copy(p[from-off:end-off], d[from-sp.Start:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
