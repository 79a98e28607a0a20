package gzran

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

func decodeErr(gz []byte) ([]byte, error) {
	x := NewIndexer(bytes.NewReader(gz), 1<<10)
	var out bytes.Buffer
	_, err := io.Copy(&out, x)
	if err == nil {
		_, err = x.Index()
	}
	return out.Bytes(), err
}

// handGzip builds a member by hand so header flags can be chosen.
func handGzip(flg byte, extra []byte, payload []byte) []byte {
	h := []byte{0x1f, 0x8b, 8, flg, 1, 2, 3, 4, 0, 3}
	if flg&0x04 != 0 {
		h = binary.LittleEndian.AppendUint16(h, uint16(len(extra)))
		h = append(h, extra...)
	}
	if flg&0x08 != 0 {
		h = append(h, "name.tar\x00"...)
	}
	if flg&0x10 != 0 {
		h = append(h, "a comment\x00"...)
	}
	if flg&0x02 != 0 {
		h = binary.LittleEndian.AppendUint16(h, uint16(crc32.ChecksumIEEE(h)))
	}
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, 6)
	w.Write(payload)
	w.Close()
	h = append(h, b.Bytes()...)
	h = binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(payload))
	return binary.LittleEndian.AppendUint32(h, uint32(len(payload)))
}

func TestHeaderFields(t *testing.T) {
	payload := textish(5, 100<<10)
	for _, flg := range []byte{0, 0x02, 0x04, 0x08, 0x10, 0x1e} {
		got, err := decodeErr(handGzip(flg, []byte("xx\x00yy"), payload))
		if err != nil || !bytes.Equal(got, payload) {
			t.Errorf("flags %#x: %v", flg, err)
		}
	}
	// compress/gzip's own header fields.
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Header.Name, w.Header.Comment, w.Header.Extra = "f", "c", []byte{'A', 'B', 0, 0}
	w.Write(payload)
	w.Close()
	if got, err := decodeErr(b.Bytes()); err != nil || !bytes.Equal(got, payload) {
		t.Errorf("compress/gzip header fields: %v", err)
	}
}

func TestErrors(t *testing.T) {
	payload := textish(6, 200<<10)
	good := gzStd(t, payload, 6)
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	badHCRC := handGzip(0x02, nil, payload)
	badHCRC[10] ^= 1
	tests := []struct {
		name string
		gz   []byte
		want error
		msg  string
	}{
		{"empty input", nil, ErrHeader, "empty input"},
		{"bad magic", mod(func(b []byte) []byte { b[1] = 0; return b }), ErrHeader, "bad magic"},
		{"not deflate", mod(func(b []byte) []byte { b[2] = 7; return b }), ErrHeader, "compression method 7"},
		{"reserved flags", mod(func(b []byte) []byte { b[3] = 0x80; return b }), ErrHeader, "reserved flag"},
		{"header crc", badHCRC, ErrHeader, "header CRC16"},
		{"truncated header", good[:5], ErrHeader, "truncated gzip header"},
		{"crc mismatch", mod(func(b []byte) []byte { b[len(b)-8] ^= 1; return b }), ErrChecksum, "CRC-32"},
		{"isize mismatch", mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrChecksum, "ISIZE"},
		{"truncated data", good[:len(good)/2], io.ErrUnexpectedEOF, "truncated at compressed byte"},
		{"truncated trailer", good[:len(good)-3], io.ErrUnexpectedEOF, "truncated"},
		{"trailing garbage", append(bytes.Clone(good), "junk"...), ErrHeader, "trailing garbage"},
		{"trailing zeros", append(bytes.Clone(good), 0, 0, 0, 0), ErrHeader, "trailing garbage"},
		{"reserved block type", append(bytes.Clone(good[:10]), 0x07, 0, 0), ErrCorrupt, "reserved block type"},
		{"stored length", append(bytes.Clone(good[:10]), 0x01, 5, 0, 5, 0), ErrCorrupt, "stored block length"},
		// Fixed block: literal 'a' (0x91 reversed...) then a distance of 1
		// with nothing decoded: 0x03 = BFINAL, fixed; then length code
		// 257 (0000001) and distance code 0 (00000).
		{"distance too far", append(bytes.Clone(good[:10]), 0x03, 0x02, 0x00, 0, 0), ErrCorrupt, "distance"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeErr(tt.gz)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
}

func TestIndexBeforeEOF(t *testing.T) {
	x := NewIndexer(bytes.NewReader(gzStd(t, textish(1, 1<<20), 6)), 0)
	io.ReadFull(x, make([]byte, 1000))
	if _, err := x.Index(); err == nil {
		t.Fatal("Index before EOF succeeded")
	}
	if x.b.span != DefaultSpan {
		t.Fatalf("span %d, want default", x.b.span)
	}
	bad := NewIndexer(bytes.NewReader([]byte("not gzip at all")), 0)
	io.Copy(io.Discard, bad)
	if _, err := bad.Index(); !errors.Is(err, ErrHeader) {
		t.Fatalf("Index after a failed stream: %v", err)
	}
}

// TestTruncatedEverywhere cuts a stream at many points: every cut is an
// error, never a short successful read.
func TestTruncatedEverywhere(t *testing.T) {
	raw := textish(7, 60<<10)
	for _, gz := range [][]byte{gzStd(t, raw, 6), gzStd(t, raw, 0), gzStd(t, raw, -2)} {
		for cut := 0; cut < len(gz); cut += 1 + cut/scale(50) {
			if _, err := decodeErr(gz[:cut]); err == nil {
				t.Fatalf("stream cut at %d of %d decoded without error", cut, len(gz))
			}
		}
	}
}

// TestCorruptNeverSilent flips bytes: decoding a whole stream either fails
// or yields the original bytes (a flip in MTIME, XFL or OS changes nothing).
func TestCorruptNeverSilent(t *testing.T) {
	raw := textish(8, 80<<10)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, gz := range [][]byte{gzStd(t, raw, 6), gzKlauspost(t, raw, 1), gzStd(t, raw, -2)} {
		for i := 0; i < scale(120); i++ {
			b := bytes.Clone(gz)
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			got, err := decodeErr(b)
			if err == nil && !bytes.Equal(got, raw) {
				t.Fatalf("corrupt stream decoded to different bytes without error")
			}
		}
	}
}

func TestIndexMarshal(t *testing.T) {
	raw := textish(10, 1<<20)
	gz := gzStd(t, raw, 6)
	_, ix := inflateAll(t, gz, 128<<10)
	enc, err := ix.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var ix2 Index
	if err := ix2.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	enc2, _ := ix2.MarshalBinary()
	_, ix3 := inflateAll(t, gz, 128<<10)
	enc3, _ := ix3.MarshalBinary()
	if !bytes.Equal(enc, enc2) || !bytes.Equal(enc, enc3) {
		t.Fatal("index encoding is not deterministic")
	}
	cps := ix2.Checkpoints()
	if len(cps) < 6 || cps[0].UncompressedOffset != 0 || cps[0].CompressedOffset != 10 || cps[0].WindowSize != 0 {
		t.Fatalf("checkpoints %+v", cps)
	}
	odd := false
	for _, c := range cps[1:] {
		odd = odd || c.Bit != 0
		if c.WindowSize != windowSize {
			t.Fatalf("window %d", c.WindowSize)
		}
	}
	if !odd {
		t.Error("no checkpoint inside a byte: bit offsets untested")
	}

	// Every single-byte corruption and every truncation is detected.
	for i := 0; i < len(enc); i += 1 + i%7 {
		b := bytes.Clone(enc)
		b[i] ^= 0x10
		if err := new(Index).UnmarshalBinary(b); !errors.Is(err, ErrIndex) {
			t.Fatalf("flip at %d: %v", i, err)
		}
	}
	for n := 0; n < len(enc); n += 1 + n/10 {
		if err := new(Index).UnmarshalBinary(enc[:n]); !errors.Is(err, ErrIndex) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	// Another version, with a valid checksum.
	b := bytes.Clone(enc[:len(enc)-4])
	b[len(magic)] = 9
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if err := new(Index).UnmarshalBinary(b); !errors.Is(err, ErrIndex) || !strings.Contains(err.Error(), "version 9") {
		t.Fatalf("version 9: %v", err)
	}
	if _, err := ix.NewReaderAt(bytes.NewReader(gz), int64(len(gz))-1); !errors.Is(err, ErrIndex) {
		t.Fatalf("size mismatch: %v", err)
	}
}

func TestReadAtEOF(t *testing.T) {
	raw := textish(11, 300<<10)
	gz := gzStd(t, raw, 6)
	_, ix := inflateAll(t, gz, 64<<10)
	r, err := ix.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(raw))
	if r.Size() != size {
		t.Fatalf("Size %d", r.Size())
	}
	p := make([]byte, 10)
	for _, tt := range []struct {
		off   int64
		buf   []byte
		n     int
		isEOF bool
	}{
		{0, p, 10, false},
		{size - 10, p, 10, false},
		{size - 3, p, 3, true},
		{size, p, 0, true},
		{size + 100, p, 0, true},
		{5, nil, 0, false},
	} {
		n, err := r.ReadAt(tt.buf, tt.off)
		if n != tt.n || (err == io.EOF) != tt.isEOF || (err != nil && err != io.EOF) {
			t.Errorf("ReadAt(len %d, off %d) = %d, %v; want %d, EOF %v", len(tt.buf), tt.off, n, err, tt.n, tt.isEOF)
		}
		if n > 0 && !bytes.Equal(tt.buf[:n], raw[tt.off:tt.off+int64(n)]) {
			t.Errorf("ReadAt(off %d): wrong bytes", tt.off)
		}
	}
	if _, err := r.ReadAt(p, -1); err == nil {
		t.Error("negative offset accepted")
	}
	// A blob shorter than the index says fails clearly.
	short, _ := ix.NewReaderAt(bytes.NewReader(gz[:len(gz)/2]), int64(len(gz)))
	if _, err := short.ReadAt(make([]byte, 1000), size-1000); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short blob: %v", err)
	}
}

// rangeLog records every compressed range a Reader fetches.
type rangeLog struct {
	r      io.ReaderAt
	mu     sync.Mutex
	ranges [][2]int64
}

func (l *rangeLog) ReadAt(p []byte, off int64) (int, error) {
	l.mu.Lock()
	l.ranges = append(l.ranges, [2]int64{off, off + int64(len(p))})
	l.mu.Unlock()
	return l.r.ReadAt(p, off)
}

// TestCompressedSpanSuffices checks that a fresh Reader reads only inside
// CompressedSpan, so a lazy fetcher that fetched exactly that span serves
// the read, including reads across checkpoints and across members.
func TestCompressedSpanSuffices(t *testing.T) {
	a, b := textish(12, 900<<10), randomBytes(13, 200<<10)
	raw := append(append(bytes.Clone(a), b...), a[:70000]...)
	gz := append(append(gzStd(t, a, 6), gzStd(t, b, 6)...), gzKlauspost(t, a[:70000], 0)...)
	_, ix := inflateAll(t, gz, 100<<10)
	if len(ix.marks) < 10 {
		t.Fatalf("only %d block marks", len(ix.marks))
	}
	rng := rand.New(rand.NewPCG(5, 6))
	check := func(off, n int64) {
		t.Helper()
		log := &rangeLog{r: bytes.NewReader(gz)}
		r, _ := ix.NewReaderAt(log, int64(len(gz)))
		p := make([]byte, n)
		got, err := r.ReadAt(p, off)
		if (err != nil && err != io.EOF) || !bytes.Equal(p[:got], raw[off:off+int64(got)]) {
			t.Fatalf("ReadAt(%d, %d): %d, %v", off, n, got, err)
		}
		cs, ce := ix.CompressedSpan(off, n)
		for _, rg := range log.ranges {
			if rg[0] < cs || rg[1] > ce {
				t.Fatalf("read [%d,%d) outside CompressedSpan(%d, %d) = [%d,%d)", rg[0], rg[1], off, n, cs, ce)
			}
		}
	}
	for _, c := range ix.Checkpoints() {
		for _, d := range []int64{-1, 0, 1, 300} {
			if off := c.UncompressedOffset + d; off >= 0 && off < int64(len(raw)) {
				check(off, 1)
				check(off, 5000)
			}
		}
		if c.UncompressedOffset >= 20 {
			check(c.UncompressedOffset-20, 40) // straddles the checkpoint
		}
	}
	for i := 0; i < 100; i++ {
		check(rng.Int64N(int64(len(raw))), 1+rng.Int64N(300<<10))
	}
	if cs, ce := ix.CompressedSpan(int64(len(raw)), 10); cs != 0 || ce != 0 {
		t.Errorf("span past the end: %d %d", cs, ce)
	}
	if cs, ce := ix.CompressedSpan(0, int64(len(raw))); cs != 10 || ce != int64(len(gz)) {
		t.Errorf("whole span: [%d,%d) of %d", cs, ce, len(gz))
	}
}

// TestConcurrentReads shares one Reader between goroutines (run with -race).
func TestConcurrentReads(t *testing.T) {
	raw := textish(14, 2<<20)
	gz := gzStd(t, raw, 6)
	_, ix := inflateAll(t, gz, 256<<10)
	r, _ := ix.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 1))
			for i := 0; i < scale(40); i++ {
				off := rng.Int64N(int64(len(raw)))
				p := make([]byte, rng.IntN(64<<10))
				n, err := r.ReadAt(p, off)
				if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], raw[off:off+int64(n)]) {
					errs <- err
					return
				}
				// Sequential continuation, served by a paused decoder.
				off += int64(n)
				if off < int64(len(raw)) {
					n, err = r.ReadAt(p, off)
					if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], raw[off:off+int64(n)]) {
						errs <- err
						return
					}
				}
			}
		}(uint64(g))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent read: wrong bytes or error %v", err)
	}
}

// TestCorruptBlobPartialRead reads from a corrupted blob with a good index:
// it may not detect every flip (no CRC for partial reads; callers verify
// digests) but must never panic.
func TestCorruptBlobPartialRead(t *testing.T) {
	raw := textish(15, 500<<10)
	gz := gzStd(t, raw, 6)
	_, ix := inflateAll(t, gz, 64<<10)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 100; i++ {
		b := bytes.Clone(gz)
		b[10+rng.IntN(len(b)-10)] ^= 0xff
		r, _ := ix.NewReaderAt(bytes.NewReader(b), int64(len(b)))
		r.ReadAt(make([]byte, 50000), rng.Int64N(int64(len(raw))))
	}
}

func TestIndexWriter(t *testing.T) {
	raw := textish(16, 1<<20)
	gz := gzStd(t, raw, 6)
	var out bytes.Buffer
	iw := NewIndexWriter(&out, 100<<10)
	if _, err := iw.Index(); err == nil {
		t.Fatal("Index before Close succeeded")
	}
	for b := gz; len(b) > 0; b = b[min(len(b), 777):] {
		if _, err := iw.Write(b[:min(len(b), 777)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := iw.Close(); err != nil {
		t.Fatal(err)
	}
	ix, err := iw.Index()
	if err != nil || !bytes.Equal(out.Bytes(), raw) {
		t.Fatalf("IndexWriter: %v", err)
	}
	_, ix2 := inflateAll(t, gz, 100<<10)
	a, _ := ix.MarshalBinary()
	b, _ := ix2.MarshalBinary()
	if !bytes.Equal(a, b) {
		t.Fatal("IndexWriter and Indexer disagree")
	}

	// Corrupt input: Write or Close fails, with the decoder's error.
	bad := bytes.Clone(gz)
	bad[len(bad)/2] ^= 0xff
	iw = NewIndexWriter(io.Discard, 0)
	_, werr := iw.Write(bad)
	cerr := iw.Close()
	if cerr == nil || (werr != nil && !errors.Is(werr, cerr) && werr.Error() != cerr.Error()) {
		t.Fatalf("corrupt input: write %v, close %v", werr, cerr)
	}
	// Data after the end of the stream.
	iw = NewIndexWriter(io.Discard, 0)
	iw.Write(append(bytes.Clone(gz), "xx"...))
	if err := iw.Close(); !errors.Is(err, ErrHeader) {
		t.Fatalf("trailing data: %v", err)
	}
}

// prefetchLog is a ReaderAt with the Prefetcher capability that records the
// ranges announced and checks every read falls inside the last one.
type prefetchLog struct {
	r         io.ReaderAt
	from, end int64
	calls     int
	outside   int
}

func (p *prefetchLog) Prefetch(off, n int64) error {
	p.from, p.end = off, off+n
	p.calls++
	return nil
}

func (p *prefetchLog) ReadAt(b []byte, off int64) (int, error) {
	if off < p.from || off+int64(len(b)) > p.end {
		p.outside++
	}
	return p.r.ReadAt(b, off)
}

func TestPrefetch(t *testing.T) {
	raw := textish(18, 1<<20)
	gz := gzStd(t, raw, 6)
	_, ix := inflateAll(t, gz, 128<<10)
	pl := &prefetchLog{r: bytes.NewReader(gz)}
	r, _ := ix.NewReaderAt(pl, int64(len(gz)))
	rng := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < scale(60); i++ {
		off := rng.Int64N(int64(len(raw)))
		if i%3 == 2 {
			off = min(off+int64(i), int64(len(raw)-1)) // near the last read: a paused decoder continues
		}
		p := make([]byte, 1+rng.IntN(20000))
		n, err := r.ReadAt(p, off)
		if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], raw[off:off+int64(n)]) {
			t.Fatalf("ReadAt(%d, %d): %d, %v", len(p), off, n, err)
		}
	}
	if pl.calls == 0 || pl.outside != 0 {
		t.Fatalf("%d prefetches, %d reads outside the prefetched range", pl.calls, pl.outside)
	}
}

// TestEveryBlockACheckpoint indexes a multi-member stream with a span of one
// byte, so every block boundary, including each member's start, is a
// checkpoint, and reads from each.
func TestEveryBlockACheckpoint(t *testing.T) {
	a, b := textish(19, scale(300<<10)), randomBytes(20, scale(70<<10))
	// compress/gzip and klauspost end a member with an empty final block,
	// which takes the checkpoint at the member's end; a member whose final
	// block holds data (as zlib writes) leaves the next member's start its
	// own checkpoint, with an empty window.
	b = b[:min(len(b), 65535)]
	stored := append(bytes.Clone(gzHeader), 0x01) // BFINAL, stored
	stored = binary.LittleEndian.AppendUint16(stored, uint16(len(b)))
	stored = binary.LittleEndian.AppendUint16(stored, ^uint16(len(b)))
	stored = append(stored, b...)
	stored = binary.LittleEndian.AppendUint32(stored, crc32.ChecksumIEEE(b))
	stored = binary.LittleEndian.AppendUint32(stored, uint32(len(b)))
	raw := append(append(bytes.Clone(a), b...), a...)
	gz := append(append(gzKlauspost(t, a, 1), stored...), gzKlauspost(t, a, 9)...)
	_, ix := inflateAll(t, gz, 1)
	r, _ := ix.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
	starts := 0
	for _, c := range ix.Checkpoints() {
		if c.WindowSize == 0 && c.UncompressedOffset > 0 {
			starts++
		}
		off := c.UncompressedOffset
		p := make([]byte, 3000)
		n, err := r.ReadAt(p, off)
		if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], raw[off:off+int64(n)]) {
			t.Fatalf("ReadAt at checkpoint %+v: %d, %v", c, n, err)
		}
	}
	if starts != 1 {
		t.Fatalf("%d checkpoints at member starts, want 1", starts)
	}
}
