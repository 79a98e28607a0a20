package layers

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"testing"

	"github.com/dabba/dabba/layers/layertest"
)

// syntheticIndex is a layer of about n entries shaped like a distribution's
// /usr: n/100 directories of 99 files each, a few symlinks and hard links.
func syntheticIndex(n int) *Index {
	ix := &Index{Layer: "sha256:synthetic"}
	var off int64 = 512
	for d := 0; len(ix.Entries) < n; d++ {
		dp := fmt.Sprintf("usr/lib/package-%05d", d)
		ix.Entries = append(ix.Entries, Entry{Path: dp, Type: TypeDir, Mode: 0o755, ModTime: 1e18})
		for f := 0; f < 99 && len(ix.Entries) < n; f++ {
			p := fmt.Sprintf("%s/file-%03d.so", dp, f)
			e := Entry{Path: p, Type: TypeReg, Mode: 0o644, Size: 4096, ModTime: 1e18, Offset: off}
			switch f % 33 {
			case 1:
				e = Entry{Path: p, Type: TypeSymlink, Mode: 0o777, Linkname: "file-000.so"}
			case 2:
				e = Entry{Path: p, Type: TypeHardlink, Linkname: dp + "/file-000.so"}
			}
			ix.Entries = append(ix.Entries, e)
			off += 4096 + 512
		}
	}
	return ix
}

// BenchmarkMergeMemory reports the heap a merged tree of 100k entries keeps
// (bytes/entry), the figure quoted in doc.go.
func BenchmarkMergeMemory(b *testing.B) {
	const n = 100_000
	ixs := []*Index{syntheticIndex(n)}
	var perEntry float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tree, err := Merge(ixs)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perEntry = float64(after.HeapAlloc-before.HeapAlloc) / float64(tree.NumNames())
		runtime.KeepAlive(tree)
	}
	b.ReportMetric(perEntry, "bytes/entry")
}

func BenchmarkIndexLayer(b *testing.B) {
	var entries []layertest.Entry
	for i := 0; i < 2000; i++ {
		entries = append(entries, layertest.File(fmt.Sprintf("usr/share/doc/p%d/README", i), "some content here"))
	}
	tarball := layertest.Tar(entries...)
	b.SetBytes(int64(len(tarball)))
	for b.Loop() {
		if _, err := IndexLayer(bytes.NewReader(tarball), "sha256:bench"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMerge(b *testing.B) {
	ixs := []*Index{syntheticIndex(100_000)}
	for b.Loop() {
		if _, err := Merge(ixs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecompressGzip(b *testing.B) {
	data := layertest.Gzip(bytes.Repeat([]byte("layer bytes, fairly compressible "), 1<<15))
	b.SetBytes(int64(33 << 15))
	for b.Loop() {
		rc, _, err := Decompress(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
	}
}
