package fs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"strings"
)

// ErrCorrupt reports layer data that no longer matches what was checked
// when it was opened: changed or truncated under a mounted filesystem.
var ErrCorrupt = errors.New("fs: layer data changed or corrupt")

// chunkSize is the unit TarFiles checksums: 4 bytes of CRC-32C per 64 KiB
// is 0.006% of the data in memory, and a kernel read touches at most two
// chunks more than it needs.
const chunkSize = 64 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// TarFiles is a LayerReader over files holding the layers' uncompressed
// tar streams, read with pread. Opening reads each file once to take a
// CRC-32C of every 64 KiB chunk (and its sha256, when a diff_id is given);
// every read checks the chunks it touches, so a file that changes or
// shrinks under the mount gives an error, never wrong bytes.
//
// The alternative, for the lazy issue, keeps only the compressed blob and
// inflates from the nearest gzip checkpoint (layers/gzran); it satisfies
// the same LayerReader.
type TarFiles struct {
	layers []tarFile
}

type tarFile struct {
	f    *os.File
	name string
	size int64
	crcs []uint32 // nil when not verified
}

// TarFilesOptions tune OpenTarFiles.
type TarFilesOptions struct {
	// DiffIDs, when not nil, hold the expected "sha256:<hex>" digest of
	// each file (the layers' diff_ids); a file that does not match is an
	// error at open.
	DiffIDs []string
	// NoVerify skips the checksums: reads are plain preads, and a file
	// changed under the mount goes unnoticed. For benchmarks.
	NoVerify bool
}

// OpenTarFiles opens the uncompressed tar streams of an image's layers,
// bottom first (the order of Tree.Layers).
func OpenTarFiles(paths []string, opts TarFilesOptions) (*TarFiles, error) {
	if opts.DiffIDs != nil && len(opts.DiffIDs) != len(paths) {
		return nil, fmt.Errorf("opening layers: %d files but %d diff_ids", len(paths), len(opts.DiffIDs))
	}
	t := &TarFiles{}
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("opening layer %d: %w", i, err)
		}
		tf := tarFile{f: f, name: p}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			t.Close()
			return nil, fmt.Errorf("opening layer %s: %w", p, err)
		}
		tf.size = fi.Size()
		t.layers = append(t.layers, tf)
		want := ""
		if opts.DiffIDs != nil {
			want = opts.DiffIDs[i]
		}
		if opts.NoVerify && want == "" {
			continue
		}
		crcs, err := checksum(f, tf.size, want)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("checking layer %s: %w", p, err)
		}
		if !opts.NoVerify {
			t.layers[i].crcs = crcs
		}
	}
	return t, nil
}

// checksum reads f and returns the CRC of each chunk, checking the whole
// against the digest want ("sha256:<hex>") when it is not empty.
func checksum(f *os.File, size int64, want string) ([]uint32, error) {
	var h hash.Hash
	if want != "" {
		alg, _, _ := strings.Cut(want, ":")
		if alg != "sha256" {
			return nil, fmt.Errorf("diff_id %q: only sha256 is supported", want)
		}
		h = sha256.New()
	}
	crcs := make([]uint32, 0, (size+chunkSize-1)/chunkSize)
	buf := make([]byte, 16*chunkSize)
	var off int64
	for off < size {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if err != nil && !(err == io.EOF && int64(n) == size-off) {
			return nil, err
		}
		b := buf[:n]
		if h != nil {
			h.Write(b)
		}
		for len(b) > 0 {
			c := b[:min(len(b), chunkSize)]
			crcs = append(crcs, crc32.Checksum(c, castagnoli))
			b = b[len(c):]
		}
		off += int64(n)
	}
	if h != nil {
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want {
			return nil, fmt.Errorf("%w: digest %s, want %s (the layer file is corrupt: pull the image again)", ErrCorrupt, got, want)
		}
	}
	return crcs, nil
}

// ReadAt implements LayerReader.
func (t *TarFiles) ReadAt(layer int, p []byte, off int64) (int, error) {
	if layer < 0 || layer >= len(t.layers) {
		return 0, fmt.Errorf("no layer %d (image has %d)", layer, len(t.layers))
	}
	l := &t.layers[layer]
	if off < 0 || off+int64(len(p)) > l.size {
		return 0, fmt.Errorf("layer file %s: %d bytes at %d: beyond its %d bytes: %w", l.name, len(p), off, l.size, io.ErrUnexpectedEOF)
	}
	if l.crcs == nil {
		n, err := l.f.ReadAt(p, off)
		if err != nil && n < len(p) {
			return n, fmt.Errorf("layer file %s: %w", l.name, err)
		}
		return n, nil
	}
	// Read the whole chunks p lies in, check them, copy out.
	first := off / chunkSize
	end := min((off+int64(len(p))+chunkSize-1)/chunkSize*chunkSize, l.size)
	span := int(end - first*chunkSize)
	bp := getScratch(span)
	defer putScratch(bp)
	buf := *bp
	n, err := l.f.ReadAt(buf, first*chunkSize)
	if n < span {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("layer file %s: reading %d bytes at %d: %w", l.name, span, first*chunkSize, err)
	}
	for i, b := 0, buf; len(b) > 0; i++ {
		c := b[:min(len(b), chunkSize)]
		if crc32.Checksum(c, castagnoli) != l.crcs[first+int64(i)] {
			return 0, fmt.Errorf("layer file %s: %w: checksum mismatch in bytes %d to %d", l.name, ErrCorrupt,
				(first+int64(i))*chunkSize, (first+int64(i))*chunkSize+int64(len(c)))
		}
		b = b[len(c):]
	}
	return copy(p, buf[off-first*chunkSize:]), nil
}

// Close closes the files.
func (t *TarFiles) Close() error {
	var errs []error
	for _, l := range t.layers {
		if err := l.f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	t.layers = nil
	return errors.Join(errs...)
}
