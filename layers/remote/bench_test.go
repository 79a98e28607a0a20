package remote

import (
	"bytes"
	"context"
	"testing"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
)

// BenchmarkGzipLayerColdRead reads one small file of a dabba-indexed gzip
// layer from a registry on 127.0.0.1 with nothing cached, and reports the
// compressed bytes and requests it took (fetched-bytes/op, of the blob's
// blob-bytes).
func BenchmarkGzipLayerColdRead(b *testing.B) {
	l := testGzLayer(b)
	host := testenv.Registry(b)
	u, d := pushBlob(b, host, "bench/gz", l.blob)
	e := l.index.Entries[60]
	p := make([]byte, e.Size)
	var st Stats
	for b.Loop() {
		f, _ := NewFetcher(nil, u, d, int64(len(l.blob)), nil)
		r, err := NewGzipLayer(f, l.gz, l.spans, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.ReadAt(p, e.Offset); err != nil {
			b.Fatal(err)
		}
		s := f.Stats()
		st.BytesFetched += s.BytesFetched
		st.Requests += s.Requests
		f.Close()
	}
	b.ReportMetric(float64(st.BytesFetched)/float64(b.N), "fetched-bytes/op")
	b.ReportMetric(float64(st.Requests)/float64(b.N), "requests/op")
	b.ReportMetric(float64(len(l.blob)), "blob-bytes")
}

// BenchmarkEStargzColdRead is the same for an eStargz layer, the footer
// and TOC included.
func BenchmarkEStargzColdRead(b *testing.B) {
	g := buildEStargz(b, testEStargzTar())
	host := testenv.Registry(b)
	u, d := pushBlob(b, host, "bench/esgz", g.blob)
	var st Stats
	for b.Loop() {
		f, _ := NewFetcher(nil, u, d, int64(len(g.blob)), nil)
		e, err := OpenEStargz(context.Background(), f, g.toc, nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, x := range e.Index().Entries {
			if x.Path == "etc/motd" && x.Type == layers.TypeReg {
				p := make([]byte, x.Size)
				if _, err := e.ReadAt(p, x.Offset); err != nil || !bytes.Equal(p, text(11, 5000)) {
					b.Fatal(err)
				}
			}
		}
		s := f.Stats()
		st.BytesFetched += s.BytesFetched
		st.Requests += s.Requests
		f.Close()
	}
	b.ReportMetric(float64(st.BytesFetched)/float64(b.N), "fetched-bytes/op")
	b.ReportMetric(float64(st.Requests)/float64(b.N), "requests/op")
	b.ReportMetric(float64(len(g.blob)), "blob-bytes")
}
