package gzran

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/binary"
	"hash/crc32"
	"io"
	"testing"
)

// gzHeader is a minimal gzip member header (no optional fields).
var gzHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

// FuzzInflate feeds arbitrary bytes to the decoder, as a gzip stream and as
// the DEFLATE payload of one: it must never panic, and whatever
// compress/flate accepts it must decode identically. Valid gzip made from
// the fuzz data must round-trip, whole and through random reads.
func FuzzInflate(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("hello, hello, hello"))
	f.Add([]byte{0x03, 0x00})                   // empty fixed block
	f.Add([]byte{0x01, 0x00, 0x00, 0xff, 0xff}) // empty stored block
	f.Add(gzStd(f, []byte("some text to compress, some text"), 9))
	f.Fuzz(fuzzOne)
}

func fuzzOne(t *testing.T, data []byte) {
	decodeErr(data)

	// data as a DEFLATE payload; compare with compress/flate.
	br := bytes.NewReader(data)
	want, ferr := io.ReadAll(flate.NewReader(br))
	gz := append(bytes.Clone(gzHeader), data...)
	got, err := decodeErr(gz)
	if ferr == nil {
		used := len(data) - br.Len()
		gz = append(bytes.Clone(gzHeader), data[:used]...)
		gz = binary.LittleEndian.AppendUint32(gz, crc32.ChecksumIEEE(want))
		gz = binary.LittleEndian.AppendUint32(gz, uint32(len(want)))
		got, err = decodeErr(gz)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("compress/flate decodes %d bytes, gzran: %d bytes, %v", len(want), len(got), err)
		}
	} else if err == nil {
		t.Fatalf("gzran decoded what compress/flate rejects (%v)", ferr)
	}

	// Valid gzip of the data must round-trip.
	level := gzip.DefaultCompression
	if len(data) > 0 {
		level = int(data[0])%12 - 2 // HuffmanOnly .. BestCompression
	}
	gz = gzStd(t, data, level)
	x := NewIndexer(bytes.NewReader(gz), 512)
	var out bytes.Buffer
	if _, err := io.Copy(&out, x); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("round trip at level %d: %v", level, err)
	}
	ix, err := x.Index()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ix.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 1 + len(data)/7 {
		p := make([]byte, 700)
		n, err := r.ReadAt(p, int64(off))
		if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], data[off:min(len(data), off+700)]) {
			t.Fatalf("ReadAt(700, %d): %d, %v", off, n, err)
		}
	}
}

// FuzzIndex feeds arbitrary index bodies, with a valid magic and checksum
// so that parsing is reached, to UnmarshalBinary and then to a Reader: an
// index from an untrusted source must never panic or hang the reader.
func FuzzIndex(f *testing.F) {
	raw := textish(17, 200<<10)
	gz := gzStd(f, raw, 6)
	_, ix := inflateAll(f, gz, 32<<10)
	enc, _ := ix.MarshalBinary()
	f.Add(enc[len(magic)+1 : len(enc)-4])
	f.Add([]byte{1, 2, 3, 1, 0, 10, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		b := append([]byte(magic+"\x01"), body...)
		b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
		var ix Index
		if err := ix.UnmarshalBinary(b); err != nil {
			return
		}
		again, _ := ix.MarshalBinary()
		if !bytes.Equal(again, b) {
			t.Fatal("index does not re-encode to the same bytes")
		}
		ix.CompressedSpan(0, 1<<20)
		ix.Checkpoints()
		blob := gz
		if ix.CompressedSize() != int64(len(gz)) {
			blob = make([]byte, min(ix.CompressedSize(), 1<<20))
		}
		r, err := ix.NewReaderAt(bytes.NewReader(blob), ix.CompressedSize())
		if err != nil {
			return
		}
		p := make([]byte, 1000)
		for _, off := range []int64{0, ix.UncompressedSize() / 2, ix.UncompressedSize() - 1} {
			r.ReadAt(p, off)
		}
	})
}
