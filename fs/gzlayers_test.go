package fs

import (
	"bytes"
	"errors"
	"hash/crc32"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/gzran"
	"github.com/dabba/dabba/layers/layertest"
)

// blobFixture is a layer tar of half-compressible files and its gzip blob.
func blobFixture(t *testing.T) (tarb, gz []byte, ix *layers.Index, ck *gzran.Index) {
	t.Helper()
	rng := rand.New(rand.NewSource(7))
	var es []layertest.Entry
	for i := range 6 {
		b := make([]byte, 90<<10)
		rng.Read(b[:len(b)/2]) // half random, half zeros
		es = append(es, layertest.File(strings.Repeat("f", i+1), string(b)))
	}
	tarb = layertest.Tar(es...)
	gz = layertest.Gzip(tarb)
	ix, err := layers.IndexLayer(bytes.NewReader(tarb), "fixture")
	if err != nil {
		t.Fatal(err)
	}
	ck, err = gzran.BuildIndex(bytes.NewReader(gz), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	return tarb, gz, ix, ck
}

func chunkSums(b []byte, chunk int) []uint32 {
	var s []uint32
	for len(b) > 0 {
		k := min(len(b), chunk)
		s = append(s, crc32.Checksum(b[:k], castagnoli))
		b = b[k:]
	}
	return s
}

// TestBlobsRead reads a gzip blob through its checkpoints, an uncompressed
// blob and a zstd one, and compares with the tar.
func TestBlobsRead(t *testing.T) {
	tarb, gz, ix, ck := blobFixture(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	zst := layertest.Zstd(tarb)
	bs := []Blob{
		{Name: "gzip", Path: write("gz", gz), ChunkSums: chunkSums(gz, 64<<10), ChunkSize: 64 << 10, Checkpoints: ck, Index: ix},
		{Name: "tar", Path: write("tar", tarb), ChunkSums: chunkSums(tarb, 64<<10), ChunkSize: 64 << 10, Index: ix},
		{Name: "zstd", Path: write("zst", zst), ChunkSums: chunkSums(zst, 64<<10), ChunkSize: 64 << 10, Index: ix},
		{Name: "gzip-unchecked", Path: write("gz2", gz), Checkpoints: ck, Index: ix},
	}
	b, err := OpenBlobs(dir, bs)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for l := range bs {
		for _, sz := range []int{1, 4096, 100 << 10} {
			for off := int64(len(tarb)) - int64(sz); off >= 0; off -= 77777 {
				p := make([]byte, sz)
				if n, err := b.ReadAt(l, p, off); err != nil || n != sz || !bytes.Equal(p, tarb[off:off+int64(sz)]) {
					t.Fatalf("layer %s: %d bytes at %d: n %d, err %v, equal %v", bs[l].Name, sz, off, n, err, bytes.Equal(p, tarb[off:off+int64(sz)]))
				}
			}
		}
		if _, err := b.ReadAt(l, make([]byte, 10), int64(len(tarb))-5); err == nil {
			t.Errorf("layer %s: read past the end succeeded", bs[l].Name)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "layer*")); len(m) != 0 {
		t.Errorf("decompressed copies left: %q", m)
	}
}

// TestBlobsCorrupt flips one byte of a gzip blob after its checksums were
// taken, at many places: every read either fails with ErrCorrupt or
// returns the right bytes, never wrong ones.
func TestBlobsCorrupt(t *testing.T) {
	tarb, gz, ix, ck := blobFixture(t)
	sums := chunkSums(gz, 64<<10)
	dir := t.TempDir()
	p := filepath.Join(dir, "gz")
	failed := 0
	for pos := 20; pos < len(gz); pos += len(gz) / 13 {
		bad := bytes.Clone(gz)
		bad[pos] ^= 0x10
		if err := os.WriteFile(p, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := OpenBlobs(dir, []Blob{{Name: "gz", Path: p, ChunkSums: sums, ChunkSize: 64 << 10, Checkpoints: ck, Index: ix}})
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < int64(len(tarb)); off += 32 << 10 {
			q := make([]byte, min(32<<10, int64(len(tarb))-off))
			_, err := b.ReadAt(0, q, off)
			switch {
			case err != nil && !errors.Is(err, ErrCorrupt):
				t.Fatalf("byte %d flipped: read at %d: %v, want ErrCorrupt", pos, off, err)
			case err != nil:
				failed++
			case !bytes.Equal(q, tarb[off:off+int64(len(q))]):
				t.Fatalf("byte %d flipped: read at %d returned wrong bytes", pos, off)
			}
		}
		b.Close()
	}
	if failed == 0 {
		t.Fatal("no read noticed the corruption")
	}
	// A truncated blob is refused at open.
	os.WriteFile(p, gz[:len(gz)-70000], 0o644)
	if _, err := OpenBlobs(dir, []Blob{{Name: "gz", Path: p, ChunkSums: sums, ChunkSize: 64 << 10, Checkpoints: ck, Index: ix}}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated blob: %v, want ErrCorrupt", err)
	}
}

// TestSpanCache reads a gzip layer backwards and at random through span
// caches of several budgets, evicting and bypassing.
func TestSpanCache(t *testing.T) {
	tarb, gz, _, ck := blobFixture(t)
	for _, budget := range []int64{32 << 20, 300 << 10, 64 << 10} {
		r, err := ck.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
		if err != nil {
			t.Fatal(err)
		}
		c := newSpanCache(r, ck, budget)
		if len(c.starts) < 4 {
			t.Fatalf("%d spans", len(c.starts)-1)
		}
		rng := rand.New(rand.NewSource(budget))
		for i := 0; i < 300; i++ {
			n := rng.Intn(200<<10) + 1
			off := int64(rng.Intn(len(tarb)))
			if i < 50 {
				off = int64(len(tarb)) - int64(i+1)*int64(len(tarb))/50 // backwards
			}
			p := make([]byte, n)
			got, err := c.ReadAt(p, off)
			want := min(int64(n), int64(len(tarb))-off)
			if int64(got) != want || (err != nil) != (want < int64(n)) || !bytes.Equal(p[:got], tarb[off:off+want]) {
				t.Fatalf("budget %d: %d bytes at %d: got %d, %v", budget, n, off, got, err)
			}
		}
		if c.used > budget && c.lru.Len() > 1 {
			t.Errorf("budget %d: %d bytes held", budget, c.used)
		}
	}
}

// TestSpanDir: with a span directory, a span read once is kept on disk;
// a second open of the layer reads it from there without inflating (the
// compressed blob is then not read at all), a damaged copy is replaced,
// and nothing half-written is left behind.
func TestSpanDir(t *testing.T) {
	tarb, gz, ix, ck := blobFixture(t)
	dir := t.TempDir()
	spans := filepath.Join(dir, "spans")
	blob := filepath.Join(dir, "gz")
	if err := os.WriteFile(blob, gz, 0o644); err != nil {
		t.Fatal(err)
	}
	bl := Blob{Name: "gzip", Path: blob, ChunkSums: chunkSums(gz, 64<<10), ChunkSize: 64 << 10, Checkpoints: ck, Index: ix, SpanDir: spans}
	readAll := func() {
		t.Helper()
		b, err := OpenBlobs(dir, []Blob{bl})
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < int64(len(tarb)); off += 50 << 10 {
			p := make([]byte, min(50<<10, int64(len(tarb))-off))
			if _, err := b.ReadAt(0, p, off); err != nil || !bytes.Equal(p, tarb[off:off+int64(len(p))]) {
				t.Fatalf("%d bytes at %d: %v", len(p), off, err)
			}
		}
		if err := b.Close(); err != nil { // waits for the span writes
			t.Fatal(err)
		}
	}
	readAll()
	files, _ := filepath.Glob(filepath.Join(spans, "*"))
	if len(files) < 3 {
		t.Fatalf("%d span files: %q", len(files), files)
	}
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), ".tmp-") {
			t.Fatalf("temporary file left: %s", f)
		}
	}

	// The blob damaged past its gzip header: the spans on disk serve
	// every read.
	if err := os.WriteFile(blob, append(append([]byte(nil), gz[:16]...), make([]byte, len(gz)-16)...), 0o644); err != nil {
		t.Fatal(err)
	}
	readAll()

	// A damaged span file is noticed, dropped and rebuilt from the blob.
	if err := os.WriteFile(blob, gz, 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(files[1])
	b[10] ^= 1
	if err := os.WriteFile(files[1], b, 0o600); err != nil {
		t.Fatal(err)
	}
	readAll()
	if b2, _ := os.ReadFile(files[1]); bytes.Equal(b, b2) {
		t.Fatal("damaged span file not replaced")
	}
	// A truncated one (a disk that filled up) too.
	if err := os.Truncate(files[2], 100); err != nil {
		t.Fatal(err)
	}
	readAll()
	if fi, err := os.Stat(files[2]); err != nil || fi.Size() <= 100 {
		t.Fatalf("truncated span file not replaced: %v %v", fi, err)
	}
}
