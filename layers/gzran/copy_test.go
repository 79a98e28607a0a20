package gzran

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"testing"
)

// TestOverlappingMatches inflates data made of short periodic runs, so the
// stream is full of matches whose distance is shorter than their length,
// at every distance from 1 to 40: the match copy must repeat the pattern
// correctly whether it copies byte runs or 8-byte words.
func TestOverlappingMatches(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var raw []byte
	for period := 1; period <= 40; period++ {
		for _, n := range []int{3, 9, 17, 31, 100, 258, 600} {
			pat := make([]byte, period)
			for i := range pat {
				pat[i] = byte(rng.IntN(256))
			}
			for i := 0; i < n+period; i++ {
				raw = append(raw, pat[i%period])
			}
		}
	}
	for _, level := range []int{gzip.HuffmanOnly, gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression} {
		var gz bytes.Buffer
		w, err := gzip.NewWriterLevel(&gz, level)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		w.Close()
		got, err := io.ReadAll(NewIndexer(bytes.NewReader(gz.Bytes()), 1<<10))
		if err != nil {
			t.Fatalf("level %d: %v", level, err)
		}
		if !bytes.Equal(got, raw) {
			t.Fatalf("level %d: inflated data differs from the original", level)
		}
	}
}
