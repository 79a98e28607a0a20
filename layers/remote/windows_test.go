package remote

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// TestGzipLayerWindows reads a layer through a detached gzip index whose
// windows live in a blob of their own: every file right, each read
// fetching one window beside its spans, Prefetch and PrefetchAll taking
// the windows too, and a damaged window refused, never used.
func TestGzipLayerWindows(t *testing.T) {
	l := testGzLayer(t)
	wblob, widx, err := BuildWindows(l.gz)
	if err != nil {
		t.Fatal(err)
	}
	if len(widx.Spans) != len(l.gz.Checkpoints()) {
		t.Fatalf("%d windows for %d checkpoints", len(widx.Spans), len(l.gz.Checkpoints()))
	}
	if _, _, err := BuildWindows(l.gz.Detach()); !errors.Is(err, ErrSpanIndex) {
		t.Fatalf("BuildWindows of a detached index: %v", err)
	}
	host := testenvRegistry(t)
	u, d := pushBlob(t, host, "gz/windows", l.blob)
	wu, wd := pushBlob(t, host, "gz/windows", wblob)
	open := func(t *testing.T, cache *Cache, wurl string) (*GzipLayer, *Fetcher, *Fetcher) {
		f, err := NewFetcher(nil, u, d, int64(len(l.blob)), fastRetry())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		wf, err := NewFetcher(nil, wurl, wd, int64(len(wblob)), fastRetry())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { wf.Close() })
		r, err := NewGzipLayerWindows(f, l.gz.Detach(), l.spans, &Windows{F: wf, Index: widx}, cache)
		if err != nil {
			t.Fatal(err)
		}
		return r, f, wf
	}

	t.Run("reads", func(t *testing.T) {
		cache, _ := OpenCache(t.TempDir(), 0)
		r, f, wf := open(t, cache, wu)
		e := l.index.Entries[100]
		p := make([]byte, e.Size)
		if _, err := r.ReadAt(p, e.Offset); err != nil || !bytes.Equal(p, l.tar[e.Offset:e.Offset+e.Size]) {
			t.Fatalf("%s: %v", e.Path, err)
		}
		ws := wf.Stats()
		t.Logf("reading %s: %d layer bytes, %d window bytes in %d request(s)", e.Path, f.Stats().BytesFetched, ws.BytesFetched, ws.Requests)
		if ws.Requests != 1 || ws.BytesFetched > 33<<10 {
			t.Fatalf("one read fetched windows: %+v", ws)
		}
		checkFiles(t, l, r)
	})

	t.Run("prefetch", func(t *testing.T) {
		cache, _ := OpenCache(t.TempDir(), 0)
		r, _, wf := open(t, cache, wu)
		var rs []Range
		for _, e := range l.index.Entries[10:20] {
			rs = append(rs, Range{e.Offset, e.Size})
		}
		if err := r.PrefetchRanges(context.Background(), rs); err != nil {
			t.Fatal(err)
		}
		if wf.Stats().Requests == 0 {
			t.Fatal("PrefetchRanges fetched no window")
		}
		if err := r.PrefetchAll(context.Background()); err != nil {
			t.Fatal(err)
		}
		for i, s := range widx.Spans {
			if !cache.Has(s.Digest) {
				t.Fatalf("window %d not cached after PrefetchAll", i)
			}
		}
		// Everything local now: a new reader fetches nothing.
		r2, f2, wf2 := open(t, cache, wu)
		checkFiles(t, l, r2)
		if f2.Stats().Requests+wf2.Stats().Requests != 0 {
			t.Fatalf("reads after PrefetchAll fetched %+v and %+v", f2.Stats(), wf2.Stats())
		}
	})

	t.Run("corrupt window", func(t *testing.T) {
		fp := newFaultProxy(t, host)
		fp.set(func(fp *faultProxy) { fp.corrupt = 2 })
		r, _, _ := open(t, nil, fp.blobURL("gz/windows", wd))
		e := l.index.Entries[100]
		p := make([]byte, e.Size)
		_, err := r.ReadAt(p, e.Offset)
		if !errors.Is(err, ErrVerify) {
			t.Fatalf("read with a window damaged twice: %v, want ErrVerify", err)
		}
	})

	t.Run("mismatch", func(t *testing.T) {
		f, _ := NewFetcher(nil, u, d, int64(len(l.blob)), nil)
		defer f.Close()
		wf, _ := NewFetcher(nil, wu, wd, int64(len(wblob)), nil)
		defer wf.Close()
		short := &SpanIndex{Size: widx.Spans[2].Start, Spans: widx.Spans[:2]}
		if _, err := NewGzipLayerWindows(f, l.gz.Detach(), l.spans, &Windows{F: wf, Index: short}, nil); !errors.Is(err, ErrSpanIndex) {
			t.Fatalf("too few windows: %v", err)
		}
		if _, err := NewGzipLayer(f, l.gz.Detach(), l.spans, nil); !errors.Is(err, ErrSpanIndex) {
			t.Fatalf("detached index without windows: %v", err)
		}
		if _, err := NewGzipLayerWindows(f, l.gz, l.spans, &Windows{F: wf, Index: widx}, nil); err == nil {
			t.Fatal("windows given for an index that has them")
		}
	})
}
