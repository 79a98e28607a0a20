package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestChunkSums(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 3*BlobChunkSize+123)
	rand.New(rand.NewSource(1)).Read(blob)
	h, _, err := v1.SHA256(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(s.BlobPath(h)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.BlobPath(h), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	want := []uint32{}
	for b := blob; len(b) > 0; b = b[min(len(b), BlobChunkSize):] {
		want = append(want, crc32.Checksum(b[:min(len(b), BlobChunkSize)], castagnoli))
	}
	// Without a recorded file: built from the blob, digest checked, kept.
	got, err := s.ChunkSums(h)
	if err != nil || len(got) != 4 || got[0] != want[0] || got[3] != want[3] {
		t.Fatalf("ChunkSums = %x, %v; want %x", got, err, want)
	}
	if _, err := os.Stat(s.ChunkSumsPath(h)); err != nil {
		t.Fatalf("checksums not recorded: %v", err)
	}
	// A damaged file is rebuilt.
	os.WriteFile(s.ChunkSumsPath(h), []byte("junk"), 0o644)
	if got, err := s.ChunkSums(h); err != nil || len(got) != 4 || got[2] != want[2] {
		t.Fatalf("after damage: %x, %v", got, err)
	}
	// A corrupt blob without recorded sums fails its digest.
	os.Remove(s.ChunkSumsPath(h))
	blob[5] ^= 1
	os.WriteFile(s.BlobPath(h), blob, 0o644)
	if _, err := s.ChunkSums(h); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("corrupt blob: %v, want ErrDigestMismatch", err)
	}
	// The summing hash is the plain hash.
	c := &chunkSummer{}
	sh := summingHash{Hash: sha256.New(), c: c}
	sh.Write(blob[:10])
	sh.Write(blob[10:])
	if len(c.Sums()) != 4 {
		t.Fatalf("chunkSummer over two writes: %d sums", len(c.Sums()))
	}
}
