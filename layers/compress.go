package layers

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression is the compression of a layer blob, as found from its magic
// bytes.
type Compression uint8

// Compressions recognised by DetectCompression.
const (
	Uncompressed Compression = iota
	Gzip
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Uncompressed:
		return "uncompressed"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	// zstdMagic is the little-endian frame magic 0xFD2FB528 (RFC 8878 §3.1.1).
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// DetectCompression returns the compression whose magic bytes begin peek.
// Anything else, including a short peek, is Uncompressed. Four bytes suffice.
func DetectCompression(peek []byte) Compression {
	switch {
	case bytes.HasPrefix(peek, gzipMagic):
		return Gzip
	case bytes.HasPrefix(peek, zstdMagic):
		return Zstd
	}
	return Uncompressed
}

// Decompress detects the compression of r from its first bytes and returns a
// reader of the uncompressed stream. Read errors caused by a truncated or
// corrupt compressed stream wrap ErrCorrupt. Close releases the decoder; it
// does not close r.
func Decompress(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	peek, err := br.Peek(len(zstdMagic))
	if err != nil && err != io.EOF {
		return nil, Uncompressed, fmt.Errorf("reading layer header: %w", err)
	}
	c := DetectCompression(peek)
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, c, fmt.Errorf("%w: gzip header: %v", ErrCorrupt, err)
		}
		return &corruptReader{r: zr, c: c, close: zr.Close}, c, nil
	case Zstd:
		// A window cap keeps a hostile frame header from asking for huge
		// buffers; 1 GiB is far above what any encoder uses for layers.
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(1<<30), zstd.WithDecoderConcurrency(2))
		if err != nil {
			return nil, c, fmt.Errorf("%w: zstd header: %v", ErrCorrupt, err)
		}
		return &corruptReader{r: zr, c: c, close: func() error { zr.Close(); return nil }}, c, nil
	}
	return io.NopCloser(br), c, nil
}

// corruptReader maps decoder errors to ErrCorrupt.
type corruptReader struct {
	r     io.Reader
	c     Compression
	close func() error
	err   error
}

func (cr *corruptReader) Read(p []byte) (int, error) {
	if cr.err != nil {
		return 0, cr.err
	}
	n, err := cr.r.Read(p)
	if err != nil && err != io.EOF {
		if !errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w: %s stream: %w", ErrCorrupt, cr.c, err)
		}
		cr.err = err
	}
	return n, err
}

func (cr *corruptReader) Close() error { return cr.close() }
