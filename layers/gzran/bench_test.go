package gzran

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	kflate "github.com/klauspost/compress/flate"
	kgzip "github.com/klauspost/compress/gzip"
)

// benchCorpus is the Alpine minirootfs tar (a real layer) repeated to 64 MiB,
// gzip-compressed at the default level; a synthetic text corpus stands in
// when the sample is absent.
var benchCorpus = sync.OnceValues(func() (raw, gz []byte) {
	src, err := os.ReadFile("/work/shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz")
	var unit []byte
	if err == nil {
		zr, err := gzip.NewReader(bytes.NewReader(src))
		if err == nil {
			unit, _ = io.ReadAll(zr)
		}
	}
	if len(unit) == 0 {
		unit = textish(9, 8<<20)
	}
	for len(raw) < 64<<20 {
		raw = append(raw, unit...)
	}
	raw = raw[:64<<20]
	var b bytes.Buffer
	w, _ := kgzip.NewWriterLevel(&b, 6)
	w.Write(raw)
	w.Close()
	return raw, b.Bytes()
})

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkInflate compares whole-stream decompression speed (MB/s of
// output) of this package against compress/gzip and klauspost's gzip, and
// of the raw DEFLATE decoders against compress/flate and klauspost's flate.
func BenchmarkInflate(b *testing.B) {
	raw, gz := benchCorpus()
	// Raw DEFLATE payload: skip the 10-byte header (no optional fields) and
	// the 8-byte trailer.
	deflated := gz[10 : len(gz)-8]
	run := func(name string, f func() io.Reader) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			cpu := cpuTime()
			for b.Loop() {
				n, err := io.Copy(io.Discard, f())
				if err != nil || n != int64(len(raw)) {
					b.Fatalf("%d bytes, %v", n, err)
				}
			}
			// The machine is shared: CPU time is steadier than wall time.
			b.ReportMetric(float64(len(raw))*float64(b.N)/1e6/(cpuTime()-cpu).Seconds(), "cpu-MB/s")
		})
	}
	run("gzip/gzran", func() io.Reader { return NewIndexer(bytes.NewReader(gz), 1<<62) })
	run("gzip/gzran-index-4MiB", func() io.Reader { return NewIndexer(bytes.NewReader(gz), 4<<20) })
	run("gzip/stdlib", func() io.Reader { r, _ := gzip.NewReader(bytes.NewReader(gz)); return r })
	run("gzip/klauspost", func() io.Reader { r, _ := kgzip.NewReader(bytes.NewReader(gz)); return r })
	run("flate/stdlib", func() io.Reader { return flate.NewReader(bytes.NewReader(deflated)) })
	run("flate/klauspost", func() io.Reader { return kflate.NewReader(bytes.NewReader(deflated)) })
}

// countingReaderAt counts the compressed bytes a Reader fetches.
type countingReaderAt struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// BenchmarkReadAt4KiB measures a 4 KiB read at a random offset through one
// Reader, as a FUSE server reads: its paused decoders rarely cover a random
// offset, so nearly every read inflates from the nearest checkpoint. For
// several spans it reports the CPU time and compressed bytes fetched per
// read, the CompressedSpan a lazy fetcher would fetch, and the index size
// per MiB of uncompressed data.
func BenchmarkReadAt4KiB(b *testing.B) {
	raw, gz := benchCorpus()
	for _, span := range []int64{256 << 10, 1 << 20, 4 << 20, 16 << 20} {
		ix, err := BuildIndex(bytes.NewReader(gz), span)
		if err != nil {
			b.Fatal(err)
		}
		enc, _ := ix.MarshalBinary()
		b.Run(fmt.Sprintf("span=%dKiB", span>>10), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			c := &countingReaderAt{r: bytes.NewReader(gz)}
			p := make([]byte, 4096)
			var spanBytes int64
			cpu := cpuTime()
			r, err := ix.NewReaderAt(c, int64(len(gz)))
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				off := rng.Int64N(int64(len(raw) - len(p)))
				if _, err := r.ReadAt(p, off); err != nil {
					b.Fatal(err)
				}
				cs, ce := ix.CompressedSpan(off, int64(len(p)))
				spanBytes += ce - cs
			}
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
			b.ReportMetric(float64(c.n.Load())/float64(b.N), "cbytes-read/op")
			b.ReportMetric(float64(spanBytes)/float64(b.N), "cspan-bytes/op")
			b.ReportMetric(float64(len(enc))/float64(len(raw)>>20), "index-bytes/MiB")
		})
	}
}

// BenchmarkReadSequential reads the stream in 128 KiB pieces through one
// Reader, as a FUSE server reading a large file would; the Reader's paused
// decoders make this cost about one inflate of the data.
func BenchmarkReadSequential(b *testing.B) {
	raw, gz := benchCorpus()
	ix, err := BuildIndex(bytes.NewReader(gz), DefaultSpan)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	p := make([]byte, 128<<10)
	for b.Loop() {
		r, _ := ix.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
		for off := int64(0); off < int64(len(raw)); off += int64(len(p)) {
			if _, err := r.ReadAt(p, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
}
