package fs

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/gzran"
)

// Blob is one layer blob as a store keeps it, for OpenBlobs.
type Blob struct {
	// Name names the layer in errors (its digest).
	Name string
	// Path is the blob: a tar stream, gzip or zstd compressed or not.
	Path string
	// ChunkSums are the CRC-32C (Castagnoli) of each ChunkSize bytes of
	// the blob, taken when its digest was verified (store.ChunkSums).
	// Every read of the blob checks the chunks it touches. Nil reads the
	// blob unchecked.
	ChunkSums []uint32
	ChunkSize int64
	// Checkpoints are a gzip blob's checkpoints (store.Checkpoints), to
	// read its tar at any offset without inflating from the start. A
	// compressed blob without them is decompressed into a file at open,
	// as OpenLayers does.
	Checkpoints *gzran.Index
	// Index is the layer's entry index; DiffID the expected digest of its
	// tar, checked when the blob is decompressed at open.
	Index  *layers.Index
	DiffID string
	// SpanDir, when not empty, is a directory where the inflated spans of
	// a gzip blob (the bytes between two checkpoints) are kept once
	// inflated, for every later mount of the same layer: a container
	// then reads what an earlier one read at the speed of a file in the
	// page cache instead of inflating it again. Shared by the mounts of
	// one store; created when needed.
	SpanDir string
}

// Blobs is a LayerReader over an image's layer blobs, without extracting
// or decompressing them: gzip blobs are inflated from the nearest gzran
// checkpoint, uncompressed blobs read at their offsets. Reads check the
// compressed bytes they use against the blob's chunk checksums, so a blob
// changed on disk since it was verified gives ErrCorrupt, never wrong
// bytes. zstd blobs (no random access) are decompressed once per open into
// an unlinked file and read as TarFiles.
type Blobs struct {
	layers []blobLayer
}

type blobLayer struct {
	name string
	r    io.ReaderAt
	size int64 // of the tar stream
	c    io.Closer
}

// OpenBlobs opens an image's layer blobs, bottom first (the order of
// Tree.Layers), for serving. tmpDir holds the decompressed copies of
// compressed blobs that come without checkpoints (zstd); they are unlinked
// once open, so nothing stays behind whatever ends the process. Close the
// Blobs when done.
func OpenBlobs(tmpDir string, bs []Blob) (*Blobs, error) {
	start := time.Now()
	b := &Blobs{}
	unpacked := 0
	for i, bl := range bs {
		l, didUnpack, err := openBlob(tmpDir, i, bl)
		if err != nil {
			b.Close()
			return nil, err
		}
		if didUnpack {
			unpacked++
		}
		b.layers = append(b.layers, l)
	}
	slog.Debug("layer blobs open", "stage", "fs", "layers", len(bs), "decompressed", unpacked, "took", time.Since(start))
	return b, nil
}

func openBlob(tmpDir string, i int, bl Blob) (blobLayer, bool, error) {
	name := bl.Name
	if name == "" {
		name = bl.Path
	}
	f, err := os.Open(bl.Path)
	if err != nil {
		return blobLayer{}, false, fmt.Errorf("layer %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return blobLayer{}, false, fmt.Errorf("layer %s: %w", name, err)
	}
	peek := make([]byte, 4)
	n, _ := f.ReadAt(peek, 0)
	c := layers.DetectCompression(peek[:n])
	if c != layers.Uncompressed && !(c == layers.Gzip && bl.Checkpoints != nil) {
		// No random access: decompress once, read the copy.
		f.Close()
		p, _, err := unpack(tmpDir, i, name, Layer{Name: name, Path: bl.Path, Index: bl.Index, DiffID: bl.DiffID})
		if err != nil {
			return blobLayer{}, false, err
		}
		var opts TarFilesOptions
		if bl.DiffID != "" {
			opts.DiffIDs = []string{bl.DiffID}
		}
		t, err := OpenTarFiles([]string{p}, opts)
		os.Remove(p)
		if err != nil {
			return blobLayer{}, false, fmt.Errorf("layer %s: %w", name, err)
		}
		return blobLayer{name: name, r: tarFilesLayer{t}, size: t.layers[0].size, c: t}, true, nil
	}
	cb := &checkedBlob{f: f, name: name, size: fi.Size(), sums: bl.ChunkSums, chunk: bl.ChunkSize}
	if cb.sums != nil {
		if cb.chunk <= 0 || int64(len(cb.sums)) != (cb.size+cb.chunk-1)/cb.chunk {
			f.Close()
			return blobLayer{}, false, fmt.Errorf("layer %s: %d chunk checksums of %d bytes do not cover the blob's %d bytes: %w (the store's copy is truncated or grew: remove the image and pull it again)",
				name, len(cb.sums), cb.chunk, cb.size, ErrCorrupt)
		}
	}
	if c == layers.Uncompressed {
		return blobLayer{name: name, r: cb, size: cb.size, c: f}, false, nil
	}
	gz, err := bl.Checkpoints.NewReaderAt(cb, cb.size)
	if err != nil {
		f.Close()
		return blobLayer{}, false, fmt.Errorf("layer %s: %w", name, err)
	}
	sc := newSpanCache(gz, bl.Checkpoints, spanCacheBudget)
	sc.dir, sc.name = bl.SpanDir, name
	return blobLayer{name: name, r: sc, size: gz.Size(), c: sc.closer(f)}, false, nil
}

// ReadAt implements LayerReader.
func (b *Blobs) ReadAt(layer int, p []byte, off int64) (int, error) {
	if layer < 0 || layer >= len(b.layers) {
		return 0, fmt.Errorf("no layer %d (image has %d)", layer, len(b.layers))
	}
	l := &b.layers[layer]
	if off < 0 || off+int64(len(p)) > l.size {
		return 0, fmt.Errorf("layer %s: %d bytes at %d: beyond its %d bytes: %w", l.name, len(p), off, l.size, io.ErrUnexpectedEOF)
	}
	n, err := l.r.ReadAt(p, off)
	if n == len(p) {
		return n, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if !errors.Is(err, ErrCorrupt) {
		// A DEFLATE error, or a blob shorter than its index: the data is
		// not what was verified.
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return n, fmt.Errorf("layer %s: %w", l.name, err)
}

// Close closes the blobs.
func (b *Blobs) Close() error {
	var errs []error
	for _, l := range b.layers {
		if l.c != nil {
			if err := l.c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	b.layers = nil
	return errors.Join(errs...)
}

// tarFilesLayer is the one layer of a TarFiles as an io.ReaderAt.
type tarFilesLayer struct{ t *TarFiles }

func (t tarFilesLayer) ReadAt(p []byte, off int64) (int, error) { return t.t.ReadAt(0, p, off) }

// checkedBlob reads a blob with pread, checking every chunk a read touches
// against its recorded CRC-32C (when sums is not nil).
type checkedBlob struct {
	f     *os.File
	name  string
	size  int64
	sums  []uint32
	chunk int64
}

// ReadAt implements io.ReaderAt. gzran asks for 64 KiB at a time at any
// alignment, so a read usually checks two chunks.
func (c *checkedBlob) ReadAt(p []byte, off int64) (int, error) {
	if c.sums == nil {
		return c.f.ReadAt(p, off)
	}
	if off < 0 || off >= c.size {
		return 0, io.EOF
	}
	want := p
	if rest := c.size - off; int64(len(p)) > rest {
		want = p[:rest]
	}
	first := off / c.chunk
	end := min((off+int64(len(want))+c.chunk-1)/c.chunk*c.chunk, c.size)
	span := int(end - first*c.chunk)
	bp := getScratch(span)
	defer putScratch(bp)
	buf := *bp
	n, err := c.f.ReadAt(buf, first*c.chunk)
	if n < span {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("layer blob %s: reading %d bytes at %d: %w: %w", c.name, span, first*c.chunk, ErrCorrupt, err)
	}
	for i, b := 0, buf; len(b) > 0; i++ {
		k := b[:min(int64(len(b)), c.chunk)]
		if crc32.Checksum(k, castagnoli) != c.sums[first+int64(i)] {
			from := (first + int64(i)) * c.chunk
			return 0, fmt.Errorf("layer blob %s: %w: checksum mismatch in bytes %d to %d (the store's copy changed since it was verified)", c.name, ErrCorrupt, from, from+int64(len(k)))
		}
		b = b[len(k):]
	}
	m := copy(want, buf[off-first*c.chunk:])
	if m < len(p) {
		return m, io.EOF
	}
	return m, nil
}

// spanCacheBudget bounds the inflated bytes a gzip layer keeps in memory:
// 4 spans of gzran's default 4 MiB (a span ends at the first block boundary
// after 4 MiB, so it is a little longer). Measured on the bench's large image
// (Debian + python3, gcc, numpy: 4 layers), `dabba run IMG /bin/true`
// took 164 ms without the cache and 119 ms with it (every page fault of
// ld.so and libc that goes backwards inflated again from its checkpoint);
// see layers/doc.go.
const spanCacheBudget = 20 << 20

// spanGrow is the step by which a span's inflated prefix grows past what a
// read needs, so the next page faults and readaheads find it.
const spanGrow = 256 << 10

// spanCache keeps, for the most recently used checkpoint spans of a gzip
// layer, the bytes inflated so far from the span's start, so that reads in
// any order within a span inflate it at most once; the gzran Reader's
// paused decoder continues each prefix where it stopped.
type spanCache struct {
	gz     *gzran.Reader
	starts []int64 // uncompressed offset of each span, then the end
	budget int64
	dir    string // on-disk copies of whole spans ("" for none)
	name   string // of the layer, for logs
	writes sync.WaitGroup
	open   map[int]*checkedBlob // span files open, guarded by mu

	mu    sync.Mutex
	spans map[int]*list.Element // of *spanBuf, most recent at the front
	lru   list.List
	used  int64
}

type spanBuf struct {
	k    int
	mu   sync.Mutex
	data []byte // inflated bytes from starts[k]
}

func newSpanCache(gz *gzran.Reader, ix *gzran.Index, budget int64) *spanCache {
	starts := []int64{0}
	for _, c := range ix.Checkpoints() {
		if c.UncompressedOffset > starts[len(starts)-1] {
			starts = append(starts, c.UncompressedOffset)
		}
	}
	if gz.Size() > starts[len(starts)-1] {
		starts = append(starts, gz.Size())
	}
	return &spanCache{gz: gz, starts: starts, budget: budget, spans: map[int]*list.Element{}, open: map[int]*checkedBlob{}}
}

// inMemory reports whether span k is held in memory (inflated by this
// mount, its copy on disk maybe not written yet).
func (c *spanCache) inMemory(k int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.spans[k]
	return ok
}

// span returns the buffer of span k, making room for it.
func (c *spanCache) span(k int) *spanBuf {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.spans[k]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*spanBuf)
	}
	size := c.starts[k+1] - c.starts[k]
	for c.used+size > c.budget && c.lru.Len() > 0 {
		e := c.lru.Back()
		old := e.Value.(*spanBuf)
		c.lru.Remove(e)
		delete(c.spans, old.k)
		c.used -= c.starts[old.k+1] - c.starts[old.k]
	}
	b := &spanBuf{k: k}
	c.spans[k] = c.lru.PushFront(b)
	c.used += size
	return b
}

// Spans on disk: DIR/<start>-<length>, the inflated bytes, then the
// CRC-32C (Castagnoli) of each spanChunk of them, then the CRC-32C of that
// table (all big-endian). Reads pread the bytes they need and check the
// chunks they touch, as reads of blobs do. The name ties a file to the
// span's place in the tar, so an index rebuilt with other checkpoints never
// reads a stale one.
const (
	spanChunk    = 64 << 10
	maxOpenSpans = 64 // span files a layer keeps open
)

func (c *spanCache) spanPath(k int) string {
	return filepath.Join(c.dir, fmt.Sprintf("%d-%d", c.starts[k], c.starts[k+1]-c.starts[k]))
}

// diskSpan returns span k's file on disk, opened and its checksum table
// checked, or nil when there is none (a damaged one is removed).
func (c *spanCache) diskSpan(k int) *checkedBlob {
	c.mu.Lock()
	if f, ok := c.open[k]; ok {
		c.mu.Unlock()
		return f
	}
	c.mu.Unlock()
	size := c.starts[k+1] - c.starts[k]
	path := c.spanPath(k)
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	nsums := (size + spanChunk - 1) / spanChunk
	tab := make([]byte, 4*nsums+4)
	fi, err := f.Stat()
	if err == nil && fi.Size() != size+int64(len(tab)) {
		err = fmt.Errorf("%d bytes, want %d", fi.Size(), size+int64(len(tab)))
	}
	if err == nil {
		_, err = f.ReadAt(tab, size)
	}
	if err == nil && crc32.Checksum(tab[:4*nsums], castagnoli) != binary.BigEndian.Uint32(tab[4*nsums:]) {
		err = errors.New("checksum table does not match")
	}
	if err != nil {
		f.Close()
		slog.Warn("inflated span damaged; inflating it again", "stage", "fs", "layer", c.name, "file", path, "err", err)
		os.Remove(path)
		return nil
	}
	cb := &checkedBlob{f: f, name: path, size: size, chunk: spanChunk, sums: make([]uint32, nsums)}
	for i := range cb.sums {
		cb.sums[i] = binary.BigEndian.Uint32(tab[4*i:])
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.open[k]; ok { // opened meanwhile by another read
		f.Close()
		return old
	}
	if len(c.open) >= maxOpenSpans {
		for j, old := range c.open { // any: the kernel caches the pages anyway
			old.f.Close()
			delete(c.open, j)
			break
		}
	}
	c.open[k] = cb
	return cb
}

// dropDisk closes and removes span k's file cb.
func (c *spanCache) dropDisk(k int, cb *checkedBlob) {
	c.mu.Lock()
	if c.open[k] == cb {
		delete(c.open, k)
	}
	c.mu.Unlock()
	cb.f.Close()
	os.Remove(cb.name)
}

// inflateWhole fills b (span k, empty) by inflating the whole span, and
// writes its copy for the mounts to come (in the background; Close
// waits).
func (c *spanCache) inflateWhole(b *spanBuf, k int) error {
	start, stop := c.starts[k], c.starts[k+1]
	size := stop - start
	data := make([]byte, size)
	n, err := c.gz.ReadAt(data, start)
	if int64(n) < size {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	b.data = data
	path := c.spanPath(k)
	c.writes.Add(1)
	go func() {
		defer c.writes.Done()
		tab := make([]byte, 0, 4*((size+spanChunk-1)/spanChunk)+4)
		for d := data; len(d) > 0; {
			m := min(len(d), spanChunk)
			tab = binary.BigEndian.AppendUint32(tab, crc32.Checksum(d[:m], castagnoli))
			d = d[m:]
		}
		tab = binary.BigEndian.AppendUint32(tab, crc32.Checksum(tab, castagnoli))
		if err := writeSpan(c.dir, path, data, tab); err != nil {
			slog.Debug("inflated span not kept", "stage", "fs", "layer", c.name, "err", err)
		}
	}()
	return nil
}

// writeSpan writes the parts to path atomically (a reader sees all of it
// or nothing).
func writeSpan(dir, path string, parts ...[]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	for _, b := range parts {
		if err == nil {
			_, err = f.Write(b)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// closer closes f after the span writes still running, and the span
// files.
func (c *spanCache) closer(f io.Closer) io.Closer {
	return closerFunc(func() error {
		c.writes.Wait()
		c.mu.Lock()
		for k, cb := range c.open {
			cb.f.Close()
			delete(c.open, k)
		}
		c.mu.Unlock()
		return f.Close()
	})
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// ReadAt implements io.ReaderAt.
func (c *spanCache) ReadAt(p []byte, off int64) (int, error) {
	end := c.starts[len(c.starts)-1]
	if off < 0 || off >= end {
		return 0, io.EOF
	}
	total := 0
	for len(p) > 0 && off < end {
		k := sort.Search(len(c.starts), func(i int) bool { return c.starts[i] > off }) - 1
		start, stop := c.starts[k], c.starts[k+1]
		if stop-start > c.budget/2 {
			// A span this long (a stream of huge blocks) is read
			// through the decoders alone.
			n, err := c.gz.ReadAt(p[:min(int64(len(p)), stop-off)], off)
			total += n
			if err != nil && err != io.EOF || n == 0 {
				return total, err
			}
			p, off = p[n:], off+int64(n)
			continue
		}
		if c.dir != "" && !c.inMemory(k) {
			if cb := c.diskSpan(k); cb != nil {
				want := p[:min(int64(len(p)), stop-off)]
				n, err := cb.ReadAt(want, off-start)
				if n == len(want) {
					p, off, total = p[n:], off+int64(n), total+n
					continue
				}
				// A damaged or vanished copy is only a cache: drop it
				// and inflate the span from the blob again.
				slog.Warn("inflated span unreadable; inflating it again", "stage", "fs", "layer", c.name, "file", cb.name, "err", err)
				c.dropDisk(k, cb)
			}
		}
		b := c.span(k)
		b.mu.Lock()
		need := min(off+int64(len(p)), stop) - start
		if b.data == nil && c.dir != "" {
			if err := c.inflateWhole(b, k); err != nil {
				b.mu.Unlock()
				return total, err
			}
		}
		if have := int64(len(b.data)); have < need {
			want := min(max(need, have+spanGrow), stop-start)
			if b.data == nil {
				// The whole span at once: no copies as it grows, and
				// the kernel backs only the pages written.
				b.data = make([]byte, 0, stop-start)
			}
			n, err := c.gz.ReadAt(b.data[have:want], start+have)
			b.data = b.data[:have+int64(n)]
			if int64(n) < want-have {
				b.mu.Unlock()
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return total, err
			}
		}
		n := copy(p, b.data[off-start:need])
		b.mu.Unlock()
		p = p[n:]
		off += int64(n)
		total += n
	}
	if len(p) > 0 {
		return total, io.EOF
	}
	return total, nil
}
