package gzran

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// Inputs --------------------------------------------------------------------

// scale shrinks a test size or count when the race detector is on.
func scale(n int) int {
	if raceEnabled {
		return max(1, n/8)
	}
	return n
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// textish returns compressible data with long and short repeats, like a tar
// of source files.
func textish(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	words := []string{"the ", "container ", "layer ", "func ", "return ", "err ", "nil\n", "{\n\t", "}\n", "if ", "0x", "==", "dabba ", "gzip "}
	var b bytes.Buffer
	for b.Len() < n {
		switch r.IntN(10) {
		case 0:
			b.Write(randomBytes(r.Uint64(), r.IntN(40)))
		case 1:
			if b.Len() > 1000 {
				s := b.Len() - 1 - r.IntN(min(b.Len()-1, 30000))
				l := r.IntN(300)
				b.Write(append([]byte(nil), b.Bytes()[s:min(s+l, b.Len())]...))
			}
		default:
			b.WriteString(words[r.IntN(len(words))])
		}
	}
	return b.Bytes()[:n]
}

func gzStd(t testing.TB, data []byte, level int) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

func gzKlauspost(t testing.TB, data []byte, level int) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := kgzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

// gzTool compresses with the gzip binary, skipping when it is absent.
func gzTool(t testing.TB, data []byte, flag string) []byte {
	t.Helper()
	if _, err := exec.LookPath("gzip"); err != nil {
		t.Skip("gzip not found: install the gzip package")
	}
	cmd := exec.Command("gzip", "-c", "-n", flag)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func inflateAll(t testing.TB, gz []byte, span int64) ([]byte, *Index) {
	t.Helper()
	x := NewIndexer(bytes.NewReader(gz), span)
	var out bytes.Buffer
	if _, err := io.Copy(&out, x); err != nil {
		t.Fatalf("inflate: %v", err)
	}
	ix, err := x.Index()
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), ix
}

type input struct {
	name string
	gz   []byte
	raw  []byte
}

func inputs(t *testing.T) []input {
	var ins []input
	add := func(name string, raw, gz []byte) { ins = append(ins, input{name, gz, raw}) }
	datas := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"one", []byte("x")},
		{"tiny", []byte("hello, hello, hello world\n")},
		{"random-300k", randomBytes(1, scale(300<<10))},
		{"zeros-3m", make([]byte, scale(3<<20))},
		{"text-2m", textish(2, scale(2<<20))},
	}
	for _, d := range datas {
		for _, l := range []int{gzip.NoCompression, gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression, gzip.HuffmanOnly} {
			add(d.name+"/std"+string(rune('0'+l+2)), d.b, gzStd(t, d.b, l))
		}
		for _, l := range []int{kgzip.StatelessCompression, kgzip.NoCompression, 1, 4, 6, 9, kgzip.HuffmanOnly} {
			add(d.name+"/kp"+string(rune('0'+l+3)), d.b, gzKlauspost(t, d.b, l))
		}
		if _, err := exec.LookPath("gzip"); err == nil {
			add(d.name+"/gzip-1", d.b, gzTool(t, d.b, "-1"))
			add(d.name+"/gzip-9", d.b, gzTool(t, d.b, "-9"))
		}
	}
	// Multi-member: members of different sizes, one empty.
	a, b := textish(3, scale(700<<10)), randomBytes(4, scale(100<<10))
	mm := append(append(append(gzStd(t, a, 6), gzKlauspost(t, nil, 6)...), gzStd(t, b, 1)...), gzStd(t, a[:min(len(a), 5000)], 9)...)
	add("multi-member", append(append(append([]byte(nil), a...), b...), a[:min(len(a), 5000)]...), mm)
	return ins
}

// Tests ---------------------------------------------------------------------

func TestRoundTrip(t *testing.T) {
	for _, in := range inputs(t) {
		t.Run(in.name, func(t *testing.T) {
			got, ix := inflateAll(t, in.gz, 64<<10)
			if !bytes.Equal(got, in.raw) {
				t.Fatalf("decoded %d bytes, want %d (mismatch)", len(got), len(in.raw))
			}
			if ix.UncompressedSize() != int64(len(in.raw)) || ix.CompressedSize() != int64(len(in.gz)) {
				t.Fatalf("index sizes %d/%d, want %d/%d", ix.UncompressedSize(), ix.CompressedSize(), len(in.raw), len(in.gz))
			}
			checkRandomReads(t, ix, in.gz, in.raw, scale(40))
		})
	}
}

// checkRandomReads reads random ranges through a Reader and compares them
// with the full decompression.
func checkRandomReads(t *testing.T, ix *Index, gz, raw []byte, count int) {
	t.Helper()
	b, err := ix.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var ix2 Index
	if err := ix2.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	r, err := ix2.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(len(raw)), 1))
	for i := 0; i < count; i++ {
		off := int64(0)
		if len(raw) > 0 {
			off = rng.Int64N(int64(len(raw)))
		}
		n := rng.IntN(3 * int(ix.Span()))
		if i%4 == 0 {
			n = rng.IntN(5000)
		}
		p := make([]byte, n)
		got, err := r.ReadAt(p, off)
		wantN := max(0, min(n, len(raw)-int(off)))
		if got != wantN || !bytes.Equal(p[:got], raw[off:off+int64(got)]) {
			t.Fatalf("ReadAt(%d bytes, off %d) = %d, %v; want %d bytes, equal data", n, off, got, err, wantN)
		}
		if (err == io.EOF) != (wantN < n) || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d bytes, off %d) err = %v", n, off, err)
		}
	}
}

func TestAlpineMinirootfs(t *testing.T) {
	const path = "/work/shared/images/alpine-minirootfs-3.20.3-x86_64.tar.gz"
	gz, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("real-world sample %s not readable (%v): place the Alpine 3.20.3 minirootfs there to run this test", path, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	got, ix := inflateAll(t, gz, 256<<10)
	if !bytes.Equal(got, raw) {
		t.Fatal("alpine minirootfs decodes differently from compress/gzip")
	}
	if len(ix.points) < 4 {
		t.Fatalf("only %d checkpoints", len(ix.points))
	}
	checkRandomReads(t, ix, gz, raw, scale(60))
}
