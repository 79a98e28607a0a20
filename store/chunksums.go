package store

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BlobChunkSize is the unit of a layer blob's chunk checksums (ChunkSums):
// 4 bytes of CRC-32C per 64 KiB is 0.006% of the blob.
const BlobChunkSize = 64 << 10

// chunkSumsSuffix names the file beside a layer's index holding the CRC-32C
// of each BlobChunkSize bytes of the blob.
const chunkSumsSuffix = ".crc"

// chunkSumsMagic starts a chunk checksum file; the last byte is the version.
var chunkSumsMagic = [8]byte{'D', 'A', 'B', 'B', 'A', 'C', 'R', 1}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ChunkSumsPath returns the path of the chunk checksums of the layer blob h
// (see ChunkSums); it may not exist.
func (s *Store) ChunkSumsPath(h v1.Hash) string { return s.IndexPath(h) + chunkSumsSuffix }

// ChunkSums returns the CRC-32C (Castagnoli) of every BlobChunkSize bytes
// of the stored layer blob h, the last chunk possibly shorter. They are
// taken in the same pass that verified the blob's digest at pull, so a
// reader of part of the blob (a gzip checkpoint reader, which cannot check
// the stream's CRC-32 on a partial read) can check the bytes it reads
// against them and never hand out bytes changed on disk since.
//
// A blob stored without them (pulled by an older dabba) is read once: its
// sha256 is checked against h, then the checksums are recorded. A blob that
// does not match is an error wrapping ErrDigestMismatch.
func (s *Store) ChunkSums(h v1.Hash) ([]uint32, error) {
	if err := checkHash(h); err != nil {
		return nil, err
	}
	fi, err := os.Stat(s.BlobPath(h))
	if err != nil {
		return nil, fmt.Errorf("layer blob %s: %w", h, err)
	}
	if b, err := os.ReadFile(s.ChunkSumsPath(h)); err == nil {
		sums, err := unmarshalChunkSums(b, fi.Size())
		if err == nil {
			return sums, nil
		}
		// A damaged checksum file is rebuilt from the blob, which is
		// checked against its digest on the way.
	}
	sums, err := s.verifyBlobSums(h)
	if err != nil {
		return nil, err
	}
	if err := s.writeFileAtomic(s.ChunkSumsPath(h), marshalChunkSums(sums, fi.Size())); err != nil {
		return nil, fmt.Errorf("layer blob %s: recording chunk checksums: %w", h, err)
	}
	return sums, nil
}

// verifyBlobSums reads the blob h, checks its digest and returns its chunk
// checksums.
func (s *Store) verifyBlobSums(h v1.Hash) ([]uint32, error) {
	f, err := os.Open(s.BlobPath(h))
	if err != nil {
		return nil, fmt.Errorf("layer blob %s: %w", h, err)
	}
	defer f.Close()
	c := &chunkSummer{}
	sh := summingHash{Hash: sha256.New(), c: c}
	if _, err := io.Copy(sh, bufio.NewReaderSize(f, 1<<20)); err != nil {
		return nil, fmt.Errorf("layer blob %s: %w", h, err)
	}
	if got := hex.EncodeToString(sh.Sum(nil)); got != h.Hex {
		return nil, fmt.Errorf("stored layer blob %s has digest sha256:%s: %w (the store's copy is corrupt: remove the image with dabba rmi and pull it again)", h, got, ErrDigestMismatch)
	}
	return c.Sums(), nil
}

// chunkSummer takes the CRC-32C of each BlobChunkSize bytes written to it.
type chunkSummer struct {
	sums []uint32
	cur  uint32
	n    int // bytes in the current chunk
}

func (c *chunkSummer) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := min(len(p), BlobChunkSize-c.n)
		c.cur = crc32.Update(c.cur, castagnoli, p[:k])
		c.n += k
		p = p[k:]
		if c.n == BlobChunkSize {
			c.sums = append(c.sums, c.cur)
			c.cur, c.n = 0, 0
		}
	}
	return total, nil
}

// Sums returns the checksums of the chunks written so far, the last one
// possibly partial.
func (c *chunkSummer) Sums() []uint32 {
	s := append([]uint32(nil), c.sums...)
	if c.n > 0 {
		s = append(s, c.cur)
	}
	return s
}

// summingHash is a hash.Hash that also feeds a chunkSummer, so the pass
// that hashes a blob takes its chunk checksums too.
type summingHash struct {
	hash.Hash
	c *chunkSummer
}

func (s summingHash) Write(p []byte) (int, error) {
	s.c.Write(p)
	return s.Hash.Write(p)
}

// marshalChunkSums encodes the checksums of a blob of size bytes: the
// magic, the chunk size (uint32), the blob size (uint64), the count
// (uint32), the checksums (uint32 each), all little-endian, then a CRC-32C
// of everything before it.
func marshalChunkSums(sums []uint32, size int64) []byte {
	b := make([]byte, 0, 8+4+8+4+4*len(sums)+4)
	b = append(b, chunkSumsMagic[:]...)
	b = binary.LittleEndian.AppendUint32(b, BlobChunkSize)
	b = binary.LittleEndian.AppendUint64(b, uint64(size))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(sums)))
	for _, s := range sums {
		b = binary.LittleEndian.AppendUint32(b, s)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

var errChunkSums = errors.New("store: bad chunk checksum file")

// unmarshalChunkSums decodes what marshalChunkSums wrote for a blob that
// now has size bytes.
func unmarshalChunkSums(b []byte, size int64) ([]uint32, error) {
	const head = 8 + 4 + 8 + 4
	if len(b) < head+4 || [8]byte(b[:8]) != chunkSumsMagic {
		return nil, errChunkSums
	}
	if crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, errChunkSums
	}
	chunk := int64(binary.LittleEndian.Uint32(b[8:]))
	bsize := int64(binary.LittleEndian.Uint64(b[12:]))
	n := int64(binary.LittleEndian.Uint32(b[20:]))
	if chunk != BlobChunkSize || bsize != size || n != (size+chunk-1)/chunk || int64(len(b)) != head+4*n+4 {
		return nil, errChunkSums
	}
	sums := make([]uint32, n)
	for i := range sums {
		sums[i] = binary.LittleEndian.Uint32(b[head+4*i:])
	}
	return sums, nil
}
