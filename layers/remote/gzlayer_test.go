package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/gzran"
	"github.com/dabba/dabba/layers/layertest"
)

// gzLayer is a gzip layer with its dabba index.
type gzLayer struct {
	tar, blob []byte
	gz        *gzran.Index
	spans     *SpanIndex
	index     *layers.Index
}

var (
	gzLayerOnce sync.Once
	gzLayerVal  *gzLayer
	gzLayerErr  error
)

// testGzLayer returns a layer of about 6 MiB of tar (1.7 MiB gzipped):
// many small files and a few large ones, indexed every 512 KiB. It is built
// once; callers must not modify it.
func testGzLayer(t testing.TB) *gzLayer {
	t.Helper()
	gzLayerOnce.Do(func() { gzLayerVal, gzLayerErr = makeGzLayer() })
	if gzLayerErr != nil {
		t.Fatal(gzLayerErr)
	}
	return gzLayerVal
}

func makeGzLayer() (*gzLayer, error) {
	var es []layertest.Entry
	es = append(es, layertest.Dir("etc"), layertest.Dir("usr"), layertest.Dir("usr/lib"))
	for i := 0; i < 150; i++ {
		es = append(es, layertest.File(fmt.Sprintf("etc/f%03d", i), string(text(uint64(100+i), 100+i*130))))
	}
	for i := 0; i < 3; i++ {
		es = append(es, layertest.File(fmt.Sprintf("usr/lib/big%d", i), string(text(uint64(900+i), 1500_000))))
	}
	es = append(es, layertest.File("etc/empty", ""), layertest.Symlink("etc/link", "f001"))
	l := &gzLayer{tar: layertest.Tar(es...)}
	l.blob = layertest.Gzip(l.tar)
	var err error
	if l.gz, err = gzran.BuildIndex(bytes.NewReader(l.blob), 512<<10); err != nil {
		return nil, err
	}
	spans, err := BuildSpans(bytes.NewReader(l.blob), int64(len(l.blob)), l.gz)
	if err != nil {
		return nil, err
	}
	l.spans = &SpanIndex{Size: int64(len(l.blob)), Spans: spans}
	if l.index, err = layers.IndexLayer(bytes.NewReader(l.tar), "test"); err != nil {
		return nil, err
	}
	return l, nil
}

func TestBuildSpans(t *testing.T) {
	l := testGzLayer(t)
	if err := l.spans.Check(); err != nil {
		t.Fatal(err)
	}
	starts := map[int64]bool{}
	for _, s := range l.spans.Spans {
		if s.End-s.Start > MaxSpanSize {
			t.Fatalf("span %d-%d longer than %d", s.Start, s.End, MaxSpanSize)
		}
		starts[s.Start] = true
	}
	for _, c := range l.gz.Checkpoints() {
		if !starts[c.CompressedOffset] {
			t.Fatalf("checkpoint at %d starts no span", c.CompressedOffset)
		}
	}
	t.Logf("blob %d bytes, %d checkpoints, %d spans", len(l.blob), len(l.gz.Checkpoints()), len(l.spans.Spans))
	if _, err := BuildSpans(bytes.NewReader(l.blob), int64(len(l.blob))-1, l.gz); !errors.Is(err, gzran.ErrIndex) {
		t.Fatalf("wrong size: %v", err)
	}
}

func TestSpanIndexMarshal(t *testing.T) {
	l := testGzLayer(t)
	b, err := l.spans.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back SpanIndex
	if err := back.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if back.Size != l.spans.Size || len(back.Spans) != len(l.spans.Spans) {
		t.Fatal("round trip changed the index")
	}
	for i := range back.Spans {
		if back.Spans[i] != l.spans.Spans[i] {
			t.Fatalf("span %d changed", i)
		}
	}
	t.Logf("span index: %d bytes for %d spans", len(b), len(back.Spans))
	for name, bad := range map[string][]byte{
		"empty":     nil,
		"magic":     append([]byte("XXXXXXX"), b[7:]...),
		"version":   append(append([]byte(spanMagic), 9), b[8:]...),
		"truncated": b[:len(b)-10],
		"flipped":   flip(b, 20),
	} {
		if err := new(SpanIndex).UnmarshalBinary(bad); !errors.Is(err, ErrSpanIndex) {
			t.Errorf("%s: %v, want ErrSpanIndex", name, err)
		}
	}
	gap := &SpanIndex{Size: 10, Spans: []Span{{Start: 0, End: 4}, {Start: 5, End: 10}}}
	if _, err := gap.MarshalBinary(); !errors.Is(err, ErrSpanIndex) {
		t.Errorf("gap: %v", err)
	}
	short := &SpanIndex{Size: 10, Spans: []Span{{Start: 0, End: 4}}}
	if err := short.Check(); !errors.Is(err, ErrSpanIndex) {
		t.Errorf("short: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

// checkFiles reads every regular file of the layer through r and compares
// it with the tar.
func checkFiles(t *testing.T, l *gzLayer, r *GzipLayer) {
	t.Helper()
	for _, e := range l.index.Entries {
		if e.Type != layers.TypeReg || e.Size == 0 {
			continue
		}
		p := make([]byte, e.Size)
		if _, err := r.ReadAt(p, e.Offset); err != nil {
			t.Fatalf("%s: %v", e.Path, err)
		}
		if !bytes.Equal(p, l.tar[e.Offset:e.Offset+e.Size]) {
			t.Fatalf("%s: wrong bytes", e.Path)
		}
	}
}

func TestGzipLayer(t *testing.T) {
	l := testGzLayer(t)
	for _, reg := range registries(t) {
		t.Run(reg.name, func(t *testing.T) {
			u, d := pushBlob(t, reg.host, "gz/layer", l.blob)
			cache, err := OpenCache(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			f, err := NewFetcher(nil, u, d, int64(len(l.blob)), fastRetry())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := NewGzipLayer(f, l.gz, l.spans, cache)
			if err != nil {
				t.Fatal(err)
			}
			if r.Size() != int64(len(l.tar)) {
				t.Fatalf("size %d, want %d", r.Size(), len(l.tar))
			}

			// One small file: a small part of the blob.
			e := l.index.Entries[60]
			p := make([]byte, e.Size)
			if _, err := r.ReadAt(p, e.Offset); err != nil || !bytes.Equal(p, l.tar[e.Offset:e.Offset+e.Size]) {
				t.Fatalf("%s: %v", e.Path, err)
			}
			small := f.Stats()
			t.Logf("reading %s (%d bytes): %d requests, %d of %d blob bytes (%.1f%%)",
				e.Path, e.Size, small.Requests, small.BytesFetched, len(l.blob), 100*float64(small.BytesFetched)/float64(len(l.blob)))
			if small.BytesFetched*4 > int64(len(l.blob)) {
				t.Errorf("a %d-byte file fetched %d of %d bytes", e.Size, small.BytesFetched, len(l.blob))
			}

			// Random reads, then every file.
			rnd := rand.New(rand.NewPCG(7, 8))
			for i := 0; i < 40; i++ {
				off := rnd.Int64N(int64(len(l.tar)))
				p := make([]byte, min(rnd.Int64N(300<<10)+1, int64(len(l.tar))-off))
				if _, err := r.ReadAt(p, off); err != nil || !bytes.Equal(p, l.tar[off:off+int64(len(p))]) {
					t.Fatalf("ReadAt(%d, %d): %v", len(p), off, err)
				}
			}
			checkFiles(t, l, r)
			all := f.Stats()
			t.Logf("every file: %d requests, %d bytes for a %d-byte blob", all.Requests, all.BytesFetched, len(l.blob))
			if all.BytesFetched > int64(len(l.blob)) {
				t.Errorf("fetched %d bytes of a %d-byte blob: some span twice", all.BytesFetched, len(l.blob))
			}

			// A second reader (another container) with the same cache
			// fetches nothing.
			g, _ := NewFetcher(nil, u, d, int64(len(l.blob)), nil)
			defer g.Close()
			r2, err := NewGzipLayer(g, l.gz, l.spans, cache)
			if err != nil {
				t.Fatal(err)
			}
			checkFiles(t, l, r2)
			if s := g.Stats(); s.Requests != 0 {
				t.Fatalf("second reader: %+v, want nothing fetched", s)
			}
		})
	}
}

func TestGzipLayerFaults(t *testing.T) {
	l := testGzLayer(t)
	host := testenvRegistry(t)
	_, d := pushBlob(t, host, "gz/faults", l.blob)
	open := func(t *testing.T, fault func(*faultProxy), cache *Cache) (*GzipLayer, *Fetcher) {
		fp := newFaultProxy(t, host)
		fp.set(fault)
		f, err := NewFetcher(nil, fp.blobURL("gz/faults", d), d, int64(len(l.blob)), fastRetry())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		r, err := NewGzipLayer(f, l.gz, l.spans, cache)
		if err != nil {
			t.Fatal(err)
		}
		return r, f
	}
	// readSome reads a few files; each read gives the right bytes or an
	// error, never wrong bytes. It returns the first error.
	readSome := func(t *testing.T, r *GzipLayer) error {
		var first error
		for _, i := range []int{10, 100, 153, 154, 155} {
			e := l.index.Entries[i]
			if e.Type != layers.TypeReg {
				t.Fatalf("entry %d is %s", i, e.Type)
			}
			p := make([]byte, e.Size)
			_, err := r.ReadAt(p, e.Offset)
			if err == nil && !bytes.Equal(p, l.tar[e.Offset:e.Offset+e.Size]) {
				t.Fatalf("%s: WRONG BYTES without an error", e.Path)
			}
			if err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	for _, c := range []struct {
		name  string
		fault func(*faultProxy)
		fails bool
	}{
		{"ignores-range", func(fp *faultProxy) { fp.ignoreRange = true }, false},
		{"rejects-multi-range", func(fp *faultProxy) { fp.rejectMulti = true }, false},
		{"cuts-connections", func(fp *faultProxy) { fp.cut = 3 }, false},
		{"ignores-range-and-cuts", func(fp *faultProxy) { fp.ignoreRange, fp.cut = true, 2 }, false},
		{"corrupts-once", func(fp *faultProxy) { fp.corrupt = 1 }, false},
		{"corrupts-always", func(fp *faultProxy) { fp.corrupt = -1 }, true},
		{"ignores-range-corrupts-once", func(fp *faultProxy) { fp.ignoreRange, fp.corrupt = true, 1 }, false},
		{"ignores-range-corrupts-always", func(fp *faultProxy) { fp.ignoreRange, fp.corrupt = true, -1 }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cache, err := OpenCache(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			r, _ := open(t, c.fault, cache)
			err = readSome(t, r)
			if !c.fails {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ve *VerifyError
			if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), d.String()) {
				t.Fatalf("error %v: want ErrVerify naming the blob", err)
			}
			if errors.As(err, &ve) && !strings.Contains(err.Error(), "span") {
				t.Fatalf("error %v does not name the span", err)
			}
			t.Logf("error: %v", err)
			// Nothing unverified entered the cache.
			if n, _ := cache.Size(); n != 0 {
				left := 0
				for _, s := range l.spans.Spans {
					if cache.Has(s.Digest) {
						left++
					}
				}
				if n > 0 && left == 0 {
					t.Fatalf("cache holds %d bytes that are no span", n)
				}
			}
		})
	}
}

func TestGzipLayerErrors(t *testing.T) {
	l := testGzLayer(t)
	f, _ := NewFetcher(nil, "http://127.0.0.1:1/x", hashOf("x"), int64(len(l.blob))+1, nil)
	if _, err := NewGzipLayer(f, l.gz, l.spans, nil); !errors.Is(err, ErrSpanIndex) || !strings.Contains(err.Error(), "dabba index push") {
		t.Fatalf("size mismatch: %v", err)
	}
	bad := &SpanIndex{Size: l.spans.Size, Spans: l.spans.Spans[1:]}
	g, _ := NewFetcher(nil, "http://127.0.0.1:1/x", hashOf("x"), int64(len(l.blob)), nil)
	if _, err := NewGzipLayer(g, l.gz, bad, nil); !errors.Is(err, ErrSpanIndex) {
		t.Fatalf("gap: %v", err)
	}
}

// TestGzipLayerConcurrent reads one layer from many goroutines at once, as
// the FUSE server does: right bytes, and no span fetched twice.
func TestGzipLayerConcurrent(t *testing.T) {
	l := testGzLayer(t)
	u, d := pushBlob(t, testenvRegistry(t), "gz/concurrent", l.blob)
	f, err := NewFetcher(nil, u, d, int64(len(l.blob)), &Options{MaxConcurrent: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := NewGzipLayer(f, l.gz, l.spans, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; i < 30; i++ {
				off := rnd.Int64N(int64(len(l.tar)))
				p := make([]byte, min(rnd.Int64N(128<<10)+1, int64(len(l.tar))-off))
				if _, err := r.ReadAt(p, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, l.tar[off:off+int64(len(p))]) {
					errs <- fmt.Errorf("ReadAt(%d, %d): wrong bytes", len(p), off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s := f.Stats(); s.BytesFetched > int64(len(l.blob)) {
		t.Errorf("fetched %d bytes of a %d-byte blob: a span twice", s.BytesFetched, len(l.blob))
	}
}

// TestGzipLayerPrefetchAll: PrefetchAll caches every span; over a cache
// that holds them it reads none back (a later run's background fetch).
func TestGzipLayerPrefetchAll(t *testing.T) {
	l := testGzLayer(t)
	u, d := pushBlob(t, testenvRegistry(t), "gz/prefetch", l.blob)
	cache, err := OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := NewFetcher(nil, u, d, int64(len(l.blob)), nil)
	defer f.Close()
	r, err := NewGzipLayer(f, l.gz, l.spans, cache)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PrefetchAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, s := range l.spans.Spans {
		if !cache.Has(s.Digest) {
			t.Fatalf("span %d-%d not cached", s.Start, s.End)
		}
	}
	// Again, in another reader over the same cache (a later run), after
	// one cached span was damaged on disk: the cached spans are not read
	// again (no request either), and a read of the damaged one notices,
	// fetches it again and returns the right bytes.
	k := len(l.spans.Spans) / 2
	dp := cache.path(l.spans.Spans[k].Digest)
	if err := os.WriteFile(dp, []byte("damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, _ := NewFetcher(nil, u, d, int64(len(l.blob)), nil)
	defer g.Close()
	r2, err := NewGzipLayer(g, l.gz, l.spans, cache)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.PrefetchAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := g.Stats(); st.Requests != 0 {
		t.Errorf("prefetch over a full cache made %d requests, want none (nothing read back either)", st.Requests)
	}
	checkFiles(t, l, r2)
	if st := g.Stats(); st.Requests != 1 {
		t.Errorf("reading every file after one cached span was damaged: %d requests, want 1", st.Requests)
	}

	// The fs's view: layer 1 of an image whose layer 0 is a local tar.
	ls := Layers{bytes.NewReader(l.tar), r}
	e := l.index.Entries[5]
	p := make([]byte, e.Size)
	for i := range ls {
		if _, err := ls.ReadAt(i, p, e.Offset); err != nil || !bytes.Equal(p, l.tar[e.Offset:e.Offset+e.Size]) {
			t.Fatalf("layer %d: %v", i, err)
		}
	}
	if _, err := ls.ReadAt(2, p, 0); err == nil {
		t.Fatal("read of a missing layer")
	}
}

func FuzzSpanIndexUnmarshal(f *testing.F) {
	l := testGzLayer(f)
	b, _ := l.spans.MarshalBinary()
	f.Add(b)
	f.Add([]byte(spanMagic + "\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s SpanIndex
		if err := s.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrSpanIndex) {
				t.Fatalf("error %v does not wrap ErrSpanIndex", err)
			}
			return
		}
		if err := s.Check(); err != nil {
			t.Fatalf("accepted an index that fails Check: %v", err)
		}
		again, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var back SpanIndex
		if err := back.UnmarshalBinary(again); err != nil || back.Size != s.Size || !slices.Equal(back.Spans, s.Spans) {
			t.Fatalf("round trip differs: %v", err)
		}
	})
}
