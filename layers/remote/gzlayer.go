package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"golang.org/x/sync/errgroup"

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

	win  *Windows
	winV *verifier // of win.F
}

// Windows is where the windows of a detached gzran index are (see
// gzran.Index.Detach): a blob of their own, read by F, whose span i
// (Index.Spans[i]) is checkpoint i's stored window, checked against the
// span's digest like the layer's own spans.
type Windows struct {
	F     *Fetcher
	Index *SpanIndex
}

// NewGzipLayer returns the reader of the layer fetched by f, described by
// gz and spans, caching verified spans in cache (nil for none). gz must
// have its windows; NewGzipLayerWindows reads a detached one.
func NewGzipLayer(f *Fetcher, gz *gzran.Index, spans *SpanIndex, cache *Cache) (*GzipLayer, error) {
	return NewGzipLayerWindows(f, gz, spans, nil, cache)
}

// NewGzipLayerWindows is NewGzipLayer for a gzip index that is detached
// (gz.Detached()) from its windows, which are fetched from win when a read
// starts from their checkpoint (and by Prefetch and PrefetchAll), verified
// and cached as spans are. win is nil when gz has its windows.
func NewGzipLayerWindows(f *Fetcher, gz *gzran.Index, spans *SpanIndex, win *Windows, cache *Cache) (*GzipLayer, error) {
	if err := spans.Check(); err != nil {
		return nil, fmt.Errorf("layer %s: %w", f.digest, err)
	}
	if spans.Size != f.size || gz.CompressedSize() != f.size {
		return nil, fmt.Errorf("layer %s: %w: blob has %d bytes, span index %d, gzip index %d; rebuild the index with `dabba index push`",
			f.digest, ErrSpanIndex, f.size, spans.Size, gz.CompressedSize())
	}
	l := &GzipLayer{gz: gz, spans: spans, v: newVerifier(f, cache), ctx: f.ctx, win: win}
	switch {
	case gz.Detached() && win == nil:
		return nil, fmt.Errorf("layer %s: %w: the gzip index has no windows and none were given; rebuild the index with `dabba index push`", f.digest, ErrSpanIndex)
	case gz.Detached():
		if err := win.Index.Check(); err != nil {
			return nil, fmt.Errorf("layer %s: windows: %w", f.digest, err)
		}
		if len(win.Index.Spans) != len(gz.Checkpoints()) || win.Index.Size != win.F.size {
			return nil, fmt.Errorf("layer %s: %w: %d windows in a %d-byte blob for %d checkpoints in a %d-byte windows blob; rebuild the index with `dabba index push`",
				f.digest, ErrSpanIndex, len(win.Index.Spans), win.Index.Size, len(gz.Checkpoints()), win.F.size)
		}
		l.winV = newVerifier(win.F, cache)
		l.gz = gz.WithWindows(l.window)
		gz = l.gz
	case win != nil:
		return nil, fmt.Errorf("layer %s: windows given for a gzip index that has its own", f.digest)
	}
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

// window returns checkpoint i's verified stored window (gzran.WindowFunc).
func (l *GzipLayer) window(i int) ([]byte, error) {
	b, err := l.windowPieces(l.ctx, i, i+1)
	if err != nil {
		return nil, err
	}
	return b[0], nil
}

// windowPieces returns the verified windows of checkpoints [i, j).
func (l *GzipLayer) windowPieces(ctx context.Context, i, j int) ([][]byte, error) {
	return l.winV.get(ctx, l.windowPieceList(i, j))
}

// windowPieceList is the pieces of the windows of checkpoints [i, j).
func (l *GzipLayer) windowPieceList(i, j int) []piece {
	ps := make([]piece, 0, j-i)
	for k := i; k < j; k++ {
		sp := l.win.Index.Spans[k]
		ps = append(ps, piece{start: sp.Start, end: sp.End, digest: sp.Digest, name: func() string { return fmt.Sprintf("window of checkpoint %d", k) }})
	}
	return ps
}

// Prefetch fetches, verifies and caches the spans that reading the
// uncompressed range [off, off+n) needs, and for a detached index the
// window of the checkpoint the read starts from, at the same time.
func (l *GzipLayer) Prefetch(ctx context.Context, off, n int64) error {
	return l.PrefetchRanges(ctx, []Range{{off, n}})
}

// Range is a range of the uncompressed stream: N bytes at Off.
type Range struct{ Off, N int64 }

// PrefetchRanges is Prefetch of many ranges at once, in the order given
// (the order a command read them): batches of about prefetchBatch
// compressed bytes, a few in flight at a time, so that the first ranges
// arrive first and a read waiting for them does not wait for the rest.
// Within a batch, neighbouring spans are fetched by one request (the
// Fetcher coalesces them), the windows beside them.
func (l *GzipLayer) PrefetchRanges(ctx context.Context, rs []Range) error {
	const (
		prefetchBatch = 1 << 20
		prefetchAhead = 3
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(prefetchAhead)
	seen := map[int]bool{}
	seenWin := map[int]bool{}
	var ps, wins []piece
	var size int64
	flush := func() {
		if len(ps) == 0 && len(wins) == 0 {
			return
		}
		bps, bwins := ps, wins
		ps, wins, size = nil, nil, 0
		g.Go(func() error { return l.getBatch(gctx, bps, bwins) })
	}
	for _, r := range rs {
		cstart, cend := l.gz.CompressedSpan(r.Off, r.N)
		if cend <= cstart {
			continue
		}
		i, j := l.spans.covering(cstart, cend)
		for k := i; k < j; k++ {
			if !seen[k] {
				seen[k] = true
				p := l.spanPiece(k)
				ps = append(ps, p)
				size += p.end - p.start
			}
		}
		if l.win != nil {
			// The windows of every checkpoint in the range: a read
			// may start anywhere in it.
			first, last := l.gz.CheckpointAt(r.Off), l.gz.CheckpointAt(min(r.Off+r.N, l.gz.UncompressedSize())-1)
			for k := first; k >= 0 && k <= last; k++ {
				if seenWin[k] {
					continue
				}
				seenWin[k] = true
				sp := l.win.Index.Spans[k]
				wins = append(wins, piece{start: sp.Start, end: sp.End, digest: sp.Digest, name: func() string { return fmt.Sprintf("window of checkpoint %d", k) }})
				size += sp.End - sp.Start
			}
		}
		if size >= prefetchBatch {
			flush()
		}
	}
	flush()
	return g.Wait()
}

// getBatch fetches the spans ps and the windows wins, in parallel.
func (l *GzipLayer) getBatch(ctx context.Context, ps, wins []piece) error {
	sort.Slice(ps, func(a, b int) bool { return ps[a].start < ps[b].start })
	sort.Slice(wins, func(a, b int) bool { return wins[a].start < wins[b].start })
	var werr error
	var wg sync.WaitGroup
	if len(wins) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			werr = l.winV.ensure(ctx, wins)
		}()
	}
	var err error
	if len(ps) > 0 {
		err = l.v.ensure(ctx, ps)
	}
	wg.Wait()
	return errors.Join(err, werr)
}

// PrefetchAll fetches every span into the cache (the background fetch;
// without a cache it only checks that the registry serves the blob),
// batch bytes at a time (16 MiB when 0) so that memory stays small, and
// then every window of a detached index. Before each batch it calls wait
// (when not nil), which may block to give way to reads (see Quiet).
func (l *GzipLayer) PrefetchAll(ctx context.Context) error {
	return l.PrefetchAllPaced(ctx, 0, nil)
}

// PrefetchAllPaced is PrefetchAll in batches of batch bytes, calling wait
// before each.
func (l *GzipLayer) PrefetchAllPaced(ctx context.Context, batch int64, wait func(context.Context) error) error {
	if batch <= 0 {
		batch = 16 << 20
	}
	step := func() error {
		if wait != nil {
			return wait(ctx)
		}
		return ctx.Err()
	}
	for off := int64(0); off < l.spans.Size; off += batch {
		if err := step(); err != nil {
			return err
		}
		if err := l.v.ensure(ctx, l.spanPieces(off, min(off+batch, l.spans.Size))); err != nil {
			return err
		}
	}
	if l.win == nil {
		return nil
	}
	for i := 0; i < len(l.win.Index.Spans); {
		j := i
		for n := int64(0); j < len(l.win.Index.Spans) && n < batch; j++ {
			n += l.win.Index.Spans[j].End - l.win.Index.Spans[j].Start
		}
		if err := step(); err != nil {
			return err
		}
		if err := l.winV.ensure(ctx, l.windowPieceList(i, j)); err != nil {
			return err
		}
		i = j
	}
	return nil
}

func (l *GzipLayer) spanPiece(k int) piece {
	sp := l.spans.Spans[k]
	return piece{start: sp.Start, end: sp.End, digest: sp.Digest, name: func() string { return fmt.Sprintf("span %d", k) }}
}

// spanPieces is the pieces of the spans covering [start, end).
func (l *GzipLayer) spanPieces(start, end int64) []piece {
	i, j := l.spans.covering(start, end)
	ps := make([]piece, 0, j-i)
	for k := i; k < j; k++ {
		ps = append(ps, l.spanPiece(k))
	}
	return ps
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
