package remote

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sync/errgroup"

	"github.com/dabba/dabba/layers"
)

// TOCDigestAnnotation is the layer descriptor annotation holding the
// digest of an eStargz layer's TOC JSON.
const TOCDigestAnnotation = estargz.TOCJSONDigestAnnotation

// Landmark file names of eStargz: the files before PrefetchLandmark in the
// blob are the ones the image's builder expects a container to read at
// start; NoPrefetchLandmark says there are none. Neither appears in the
// Index.
const (
	PrefetchLandmark   = estargz.PrefetchLandmark
	NoPrefetchLandmark = estargz.NoPrefetchLandmark
)

// ErrNotEStargz reports a blob without an eStargz footer.
var ErrNotEStargz = errors.New("remote: not an eStargz blob")

// Bounds on what a blob's tail may make OpenEStargz read: the guess of the
// tail holding footer and TOC (one request for most layers), and the
// largest TOC accepted, compressed and as JSON.
const (
	maxTOCGzip      = 64 << 20
	maxTOCJSON      = 512 << 20
	estargzMaxChunk = 64 << 20 // a chunk's uncompressed size, and its offset in its gzip stream
)

// tocTailGuess is how much of the blob's end the first request fetches: the
// footer and, for most layers, the whole TOC (Alpine's takes 20 KiB). A
// variable for tests.
var tocTailGuess int64 = 64 << 10

// Chunk is one piece of a regular file in an eStargz blob: Size bytes at
// FileOffset of the file are the uncompressed bytes InnerOffset.. of the
// gzip stream starting at CompressedStart (the next stream starts at
// CompressedEnd), and their SHA-256 is Digest (the TOC's chunkDigest).
type Chunk struct {
	FileOffset, Size               int64
	CompressedStart, CompressedEnd int64
	InnerOffset                    int64
	Digest                         Digest
}

// EStargz reads an eStargz layer from a registry by its TOC: an Index of
// its entries and an io.ReaderAt over its content, fetching and verifying
// only the chunks a read needs. It is safe for concurrent use.
//
// An eStargz TOC records no uncompressed tar offsets, so the Index's
// offsets are in the layer's content space instead: the contents of its
// regular files one after the other, in TOC order. ReadAt reads that
// space; Index.TarSize is its size.
type EStargz struct {
	v         *verifier
	ctx       context.Context
	tocDigest Digest
	index     *layers.Index
	files     []efile // regular files with content, by virtual offset
	byPath    map[string]int
	prefetch  []string
	tocOffset int64
}

type efile struct {
	path      string
	off, size int64 // in the content space
	chunks    []Chunk
}

// OpenEStargz reads the footer and TOC of the eStargz blob f fetches (by
// Range requests on its tail), checks the TOC's JSON against tocDigest (the
// layer's TOCDigestAnnotation, "sha256:…") and returns the layer's reader.
// Fetched chunks are cached in cache (nil for none).
func OpenEStargz(ctx context.Context, f *Fetcher, tocDigest string, cache *Cache) (*EStargz, error) {
	if tocDigest == "" {
		return nil, fmt.Errorf("layer %s: no %s annotation: an eStargz layer cannot be read lazily without it; pull the image whole", f.digest, TOCDigestAnnotation)
	}
	want, err := ParseDigest(tocDigest)
	if err != nil {
		return nil, fmt.Errorf("layer %s: annotation %s: %w", f.digest, TOCDigestAnnotation, err)
	}
	size := f.size
	// A TOC read before (by any run of this user) is in the cache's
	// notes, with where it starts; checked against the annotation again.
	note := "estargz-toc-" + hex.EncodeToString(want[:])
	binNote := "estargz-tocbin-" + hex.EncodeToString(want[:])
	if cache != nil {
		// The compact form first (tocbin.go), then the JSON.
		if b, ok := cache.GetNote(binNote); ok {
			if toc, off, err := unmarshalTOC(b); err == nil && off > 0 && off < size {
				if e, err := newEStargzTOC(f, cache, want, off, toc); err == nil {
					return e, nil
				}
			}
		}
		if b, ok := cache.GetNote(note); ok && len(b) > 8 {
			off := int64(binary.BigEndian.Uint64(b[:8]))
			if Digest(sha256.Sum256(b[8:])) == want && off > 0 && off < size {
				if e, toc, err := newEStargz(f, cache, want, off, b[8:]); err == nil {
					putNote(cache, binNote, marshalTOC(toc, off))
					return e, nil
				}
			}
		}
	}
	tail := make([]byte, min(size, tocTailGuess))
	if _, err := f.ReadAtContext(ctx, tail, size-int64(len(tail))); err != nil {
		return nil, fmt.Errorf("layer %s: reading the eStargz footer: %w", f.digest, err)
	}
	tocOff, footer, err := parseFooter(tail)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", f.digest, err)
	}
	tocEnd := size - footer
	if tocOff < 0 || tocOff >= tocEnd || tocEnd-tocOff > maxTOCGzip {
		return nil, fmt.Errorf("layer %s: %w: footer puts the TOC at %d in a %d-byte blob", f.digest, ErrNotEStargz, tocOff, size)
	}
	var tocGz []byte
	if tailStart := size - int64(len(tail)); tocOff >= tailStart {
		tocGz = tail[tocOff-tailStart : tocEnd-tailStart]
	} else {
		tocGz = make([]byte, tocEnd-tocOff)
		if _, err := f.ReadAtContext(ctx, tocGz, tocOff); err != nil {
			return nil, fmt.Errorf("layer %s: reading the eStargz TOC: %w", f.digest, err)
		}
	}
	jsonTOC, err := readTOC(tocGz)
	if err != nil {
		return nil, fmt.Errorf("layer %s: eStargz TOC: %w", f.digest, err)
	}
	if got := Digest(sha256.Sum256(jsonTOC)); got != want {
		return nil, fmt.Errorf("layer %s: %w: eStargz TOC has digest %s, the layer's %s annotation says %s; the registry serves a damaged or different blob",
			f.digest, ErrVerify, got, TOCDigestAnnotation, want)
	}
	e, toc, err := newEStargz(f, cache, want, tocOff, jsonTOC)
	if err != nil {
		return nil, err
	}
	if cache != nil {
		putNote(cache, note, append(binary.BigEndian.AppendUint64(nil, uint64(tocOff)), jsonTOC...))
		putNote(cache, binNote, marshalTOC(toc, tocOff))
	}
	return e, nil
}

func putNote(cache *Cache, name string, b []byte) {
	if err := cache.PutNote(name, b); err != nil {
		logCacheError(err)
	}
}

// newEStargz makes the reader of a layer from its verified TOC JSON; it
// returns the parsed TOC too.
func newEStargz(f *Fetcher, cache *Cache, want Digest, tocOff int64, jsonTOC []byte) (*EStargz, *estargz.JTOC, error) {
	var toc estargz.JTOC
	if err := json.Unmarshal(jsonTOC, &toc); err != nil {
		return nil, nil, fmt.Errorf("layer %s: eStargz TOC JSON: %w", f.digest, err)
	}
	e, err := newEStargzTOC(f, cache, want, tocOff, &toc)
	return e, &toc, err
}

// newEStargzTOC makes the reader of a layer from its TOC.
func newEStargzTOC(f *Fetcher, cache *Cache, want Digest, tocOff int64, toc *estargz.JTOC) (*EStargz, error) {
	e := &EStargz{v: newVerifier(f, cache), ctx: f.ctx, tocDigest: want, tocOffset: tocOff, byPath: map[string]int{}}
	if err := e.load(toc, f.digest.String()); err != nil {
		return nil, fmt.Errorf("layer %s: eStargz TOC: %w", f.digest, err)
	}
	return e, nil
}

// parseFooter finds the TOC offset in the footer at the end of tail, in the
// eStargz form (51 bytes) or the older stargz one (47 bytes).
func parseFooter(tail []byte) (tocOff, footerSize int64, err error) {
	var errs []error
	for _, d := range []estargz.Decompressor{new(estargz.GzipDecompressor), new(estargz.LegacyGzipDecompressor)} {
		n := d.FooterSize()
		if int64(len(tail)) < n {
			continue
		}
		_, off, _, err := d.ParseFooter(tail[int64(len(tail))-n:])
		if err == nil {
			return off, n, nil
		}
		errs = append(errs, err)
	}
	return 0, 0, fmt.Errorf("%w: %w", ErrNotEStargz, errors.Join(errs...))
}

// readTOC returns the TOC JSON of the gzip stream tocGz (a tar holding
// stargz.index.json), bounded in size.
func readTOC(tocGz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tocGz))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("no %s in the TOC stream: %w", estargz.TOCTarName, err)
		}
		if h.Name != estargz.TOCTarName {
			continue
		}
		if h.Size > maxTOCJSON {
			return nil, fmt.Errorf("TOC JSON of %d bytes is over the %d-byte limit", h.Size, maxTOCJSON)
		}
		return io.ReadAll(tr)
	}
}

// load converts the TOC into the Index and the chunk map.
func (e *EStargz) load(toc *estargz.JTOC, layer string) error {
	ix := &layers.Index{Layer: layer}
	// The compressed end of a chunk is the next offset where a gzip stream
	// starts (chunks sharing a stream have an InnerOffset), or the TOC.
	var starts []int64
	for _, t := range toc.Entries {
		if (t.Type == "reg" || t.Type == "chunk") && t.Offset > 0 && t.InnerOffset == 0 {
			starts = append(starts, t.Offset)
		}
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	nextStart := func(off int64) int64 {
		i := sort.Search(len(starts), func(i int) bool { return starts[i] > off })
		if i < len(starts) {
			return starts[i]
		}
		return e.tocOffset
	}

	var virt int64
	cur := -1 // index in e.files of the file whose chunks follow, or -1
	landmark := false
	var pre []string
	for i, t := range toc.Entries {
		if t.Type == "chunk" {
			if cur < 0 {
				return fmt.Errorf("entry %d: chunk without a regular file before it", i)
			}
			if err := e.addChunk(cur, t, nextStart); err != nil {
				return fmt.Errorf("entry %d (chunk of %q): %w", i, e.files[cur].path, err)
			}
			continue
		}
		cur = -1
		name := strings.TrimLeft(t.Name, "/")
		if p := path.Clean("/" + name); p == "/"+PrefetchLandmark || p == "/"+NoPrefetchLandmark {
			if !landmark && p == "/"+PrefetchLandmark {
				e.prefetch = pre
			}
			landmark = true
			continue
		}
		ent, skip, err := tocEntry(t)
		if err != nil {
			return &layers.EntryError{Layer: layer, Entry: t.Name, Err: err}
		}
		if skip {
			continue
		}
		if ent.Type == layers.TypeReg && ent.Size > 0 {
			ent.Offset = virt
			e.files = append(e.files, efile{path: ent.Path, off: virt, size: ent.Size})
			cur = len(e.files) - 1
			e.byPath[ent.Path] = cur
			virt += ent.Size
			if err := e.addChunk(cur, t, nextStart); err != nil {
				return fmt.Errorf("entry %d (%q): %w", i, t.Name, err)
			}
			if !landmark {
				pre = append(pre, ent.Path)
			}
		}
		ix.Entries = append(ix.Entries, *ent)
	}
	for _, f := range e.files {
		var at int64
		for _, c := range f.chunks {
			if c.FileOffset != at {
				return fmt.Errorf("file %q: chunks leave a gap or overlap at byte %d", f.path, at)
			}
			at += c.Size
		}
		if at != f.size {
			return fmt.Errorf("file %q: chunks hold %d of its %d bytes", f.path, at, f.size)
		}
	}
	ix.TarSize = virt
	e.index = ix
	return nil
}

// addChunk records t, a "reg" or "chunk" TOC entry, as a chunk of file fi.
func (e *EStargz) addChunk(fi int, t *estargz.TOCEntry, nextStart func(int64) int64) error {
	f := &e.files[fi]
	size := t.ChunkSize
	if size == 0 {
		size = f.size - t.ChunkOffset // 0 means "to the end of the file"
	}
	ds := t.ChunkDigest
	if ds == "" && t.Type == "reg" && size == f.size {
		ds = t.Digest // older writers: the file's digest is its only chunk's
	}
	if ds == "" {
		return errors.New("no chunkDigest: the layer cannot be verified chunk by chunk")
	}
	d, err := ParseDigest(ds)
	if err != nil {
		return err
	}
	c := Chunk{FileOffset: t.ChunkOffset, Size: size, CompressedStart: t.Offset, InnerOffset: t.InnerOffset, Digest: d}
	c.CompressedEnd = nextStart(t.Offset)
	switch {
	case size <= 0 || size > estargzMaxChunk || t.ChunkOffset < 0 || t.ChunkOffset+size > f.size:
		return fmt.Errorf("chunk of %d bytes at %d in a %d-byte file", size, t.ChunkOffset, f.size)
	case t.Offset <= 0 || c.CompressedEnd <= t.Offset || c.CompressedEnd > e.tocOffset:
		return fmt.Errorf("chunk at compressed offset %d outside the blob's data (TOC at %d)", t.Offset, e.tocOffset)
	case t.InnerOffset < 0 || t.InnerOffset > estargzMaxChunk:
		return fmt.Errorf("inner offset %d", t.InnerOffset)
	case c.CompressedEnd-c.CompressedStart > 2*estargzMaxChunk:
		// Compressed data is at most slightly larger than its input.
		return fmt.Errorf("chunk's gzip stream of %d bytes", c.CompressedEnd-c.CompressedStart)
	}
	f.chunks = append(f.chunks, c)
	return nil
}

// tocEntry converts a TOC entry (not a chunk) as layers.Reader converts a
// tar header: whiteouts, cleaned paths, the same refusals.
func tocEntry(t *estargz.TOCEntry) (*layers.Entry, bool, error) {
	p, err := layers.CleanPath(t.Name)
	if err != nil {
		return nil, false, err
	}
	dir, base := path.Split(p)
	for rest := strings.TrimSuffix(dir, "/"); rest != ""; {
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		if strings.HasPrefix(comp, layers.WhiteoutMetaPrefix) {
			return nil, true, nil
		}
		if strings.HasPrefix(comp, layers.WhiteoutPrefix) {
			return nil, false, fmt.Errorf("%w: whiteout name %q used as a directory", layers.ErrInvalidPath, comp)
		}
	}
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if t.UID < 0 || int64(t.UID) > 1<<32-1 || t.GID < 0 || int64(t.GID) > 1<<32-1 {
		return nil, false, fmt.Errorf("%w: uid %d gid %d", layers.ErrBadHeader, t.UID, t.GID)
	}
	if t.DevMajor < 0 || int64(t.DevMajor) > 1<<32-1 || t.DevMinor < 0 || int64(t.DevMinor) > 1<<32-1 {
		return nil, false, fmt.Errorf("%w: device %d,%d", layers.ErrBadHeader, t.DevMajor, t.DevMinor)
	}
	e := &layers.Entry{Path: p, UID: uint32(t.UID), GID: uint32(t.GID), Mode: uint32(t.Mode & 0o7777)}
	if t.ModTime3339 != "" {
		mt, err := time.Parse(time.RFC3339, t.ModTime3339)
		if err != nil {
			return nil, false, fmt.Errorf("%w: modtime %q", layers.ErrBadHeader, t.ModTime3339)
		}
		e.ModTime = mt.UnixNano()
	}
	for k, v := range t.Xattrs {
		if k == "" || strings.IndexByte(k, 0) >= 0 {
			return nil, false, fmt.Errorf("%w: xattr name %q", layers.ErrBadHeader, k)
		}
		if strings.HasPrefix(k, "trusted.overlay.") || strings.HasPrefix(k, "user.overlay.") {
			continue // would steer kernel overlayfs; never kept
		}
		if e.Xattrs == nil {
			e.Xattrs = map[string]string{}
		}
		e.Xattrs[k] = string(v)
	}
	if strings.HasPrefix(base, layers.WhiteoutPrefix) {
		if t.Type == "dir" {
			return nil, false, fmt.Errorf("%w: whiteout is a directory", layers.ErrBadWhiteout)
		}
		if t.Type == "reg" && t.Size != 0 {
			return nil, false, fmt.Errorf("%w: whiteout has %d bytes of content", layers.ErrBadWhiteout, t.Size)
		}
		switch {
		case base == layers.WhiteoutOpaque:
			e.Type, e.Path = layers.TypeOpaque, dir
		case strings.HasPrefix(base, layers.WhiteoutMetaPrefix):
			return nil, true, nil
		default:
			target := base[len(layers.WhiteoutPrefix):]
			if target == "" || target == "." || target == ".." {
				return nil, false, fmt.Errorf("%w: whiteout of %q", layers.ErrBadWhiteout, target)
			}
			e.Type, e.Path = layers.TypeWhiteout, path.Join(dir, target)
		}
		e.Mode, e.UID, e.GID, e.Xattrs = 0, 0, 0, nil
		return e, false, nil
	}
	switch t.Type {
	case "reg":
		if t.Size < 0 || t.Size > layers.MaxEntrySize {
			return nil, false, fmt.Errorf("%w: %d bytes", layers.ErrBadSize, t.Size)
		}
		e.Type, e.Size = layers.TypeReg, t.Size
	case "dir":
		e.Type = layers.TypeDir
	case "symlink":
		if t.LinkName == "" || strings.IndexByte(t.LinkName, 0) >= 0 || len(t.LinkName) > 4095 {
			return nil, false, fmt.Errorf("%w: symlink target %q", layers.ErrInvalidPath, t.LinkName)
		}
		e.Type, e.Linkname = layers.TypeSymlink, t.LinkName
	case "hardlink":
		target, err := layers.CleanPath(t.LinkName)
		if err != nil || target == "." {
			return nil, false, fmt.Errorf("%w: target %q", layers.ErrBadLink, t.LinkName)
		}
		e.Type, e.Linkname = layers.TypeHardlink, target
	case "char", "block":
		e.Type = layers.TypeChar
		if t.Type == "block" {
			e.Type = layers.TypeBlock
		}
		e.Devmajor, e.Devminor = uint32(t.DevMajor), uint32(t.DevMinor)
	case "fifo":
		e.Type = layers.TypeFifo
	default:
		return nil, false, fmt.Errorf("%w: eStargz entry type %q", layers.ErrUnsupported, t.Type)
	}
	if p == "." && e.Type != layers.TypeDir {
		return nil, false, fmt.Errorf("%w: the root must be a directory, not %s", layers.ErrInvalidPath, e.Type)
	}
	return e, false, nil
}

// Index returns the layer's entries, with offsets in the content space
// (see EStargz). Merge it with other layers' indexes as usual.
func (e *EStargz) Index() *layers.Index { return e.index }

// TOCDigest returns the verified digest of the TOC JSON.
func (e *EStargz) TOCDigest() Digest { return e.tocDigest }

// Chunks returns the chunks of the regular file at p (a cleaned path as in
// the Index), or nil for an empty or unknown file. The slice must not be
// modified.
func (e *EStargz) Chunks(p string) []Chunk {
	if i, ok := e.byPath[p]; ok {
		return e.files[i].chunks
	}
	return nil
}

// PrefetchFiles returns the regular files placed before the prefetch
// landmark, in blob order: those the image's builder expects a container
// to read first. It is nil for a layer without a landmark or with the
// no-prefetch one.
func (e *EStargz) PrefetchFiles() []string { return e.prefetch }

// Size returns the size of the content space.
func (e *EStargz) Size() int64 { return e.index.TarSize }

// ReadAt implements io.ReaderAt over the content space.
func (e *EStargz) ReadAt(p []byte, off int64) (int, error) { return e.ReadAtContext(e.ctx, p, off) }

// ReadAtContext is ReadAt with a context for the fetches it makes.
func (e *EStargz) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("layer %s: read at negative offset %d", e.v.f.digest, off)
	}
	size := e.index.TarSize
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), size)
	type part struct {
		f   *efile
		c   Chunk
		pos int64 // content-space offset of the chunk
	}
	var parts []part
	var ps []piece
	fi := sort.Search(len(e.files), func(i int) bool { return e.files[i].off+e.files[i].size > off })
	for ; fi < len(e.files) && e.files[fi].off < end; fi++ {
		f := &e.files[fi]
		for _, c := range f.chunks {
			pos := f.off + c.FileOffset
			if pos+c.Size <= off || pos >= end {
				continue
			}
			parts = append(parts, part{f, c, pos})
			ps = append(ps, e.chunkPiece(f, c))
		}
	}
	datas, err := e.v.get(ctx, ps)
	if err != nil {
		return 0, err
	}
	n := 0
	for k, d := range datas {
		pt := parts[k]
		from := max(off, pt.pos)
		to := min(end, pt.pos+pt.c.Size)
		n += copy(p[from-off:to-off], d[from-pt.pos:to-pt.pos])
	}
	if n != int(end-off) {
		return n, fmt.Errorf("layer %s: internal error: read %d of %d bytes at %d", e.v.f.digest, n, end-off, off)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (e *EStargz) chunkPiece(f *efile, c Chunk) piece {
	return piece{
		start: c.CompressedStart, end: c.CompressedEnd, digest: c.Digest,
		name: func() string { return fmt.Sprintf("chunk at byte %d of %q", c.FileOffset, f.path) },
		decode: func(raw []byte) ([]byte, error) {
			zr, err := gzip.NewReader(bytes.NewReader(raw))
			if err != nil {
				return nil, err
			}
			if _, err := io.CopyN(io.Discard, zr, c.InnerOffset); err != nil {
				return nil, err
			}
			b := make([]byte, c.Size)
			if _, err := io.ReadFull(zr, b); err != nil {
				return nil, err
			}
			return b, nil
		},
	}
}

// Prefetch fetches the chunks of the files before the prefetch landmark,
// together (coalesced, in parallel), into the cache.
func (e *EStargz) Prefetch(ctx context.Context) error {
	return e.fetchFiles(ctx, e.prefetch)
}

// PrefetchAll fetches every chunk of the layer into the cache (background
// fetch).
func (e *EStargz) PrefetchAll(ctx context.Context) error {
	return e.PrefetchAllPaced(ctx, 0, nil)
}

// PrefetchAllPaced is PrefetchAll in batches of about batch bytes (16 MiB
// when 0), calling wait (when not nil) before each, which may block to
// give way to reads.
func (e *EStargz) PrefetchAllPaced(ctx context.Context, batch int64, wait func(context.Context) error) error {
	var ps []piece
	for i := range e.files {
		for _, c := range e.files[i].chunks {
			ps = append(ps, e.chunkPiece(&e.files[i], c))
		}
	}
	return e.getBatchedPaced(ctx, ps, batch, wait)
}

// fetchFiles fetches the chunks of the files at paths, in the order given
// (the landmark files are in the order a command read them): batches of
// about 1 MiB, a few in flight at a time, so that the first files arrive
// first and a read waiting for them does not wait for the rest.
func (e *EStargz) fetchFiles(ctx context.Context, paths []string) error {
	const (
		firstBatch = 64 << 10 // the first files wait for little; then it doubles
		maxBatch   = 1 << 20
		ahead      = 3
	)
	batch := int64(firstBatch)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(ahead)
	var ps []piece
	var size int64
	flush := func() {
		if len(ps) > 0 {
			b := ps
			ps, size = nil, 0
			g.Go(func() error { return e.v.ensure(gctx, b) })
		}
	}
	for _, p := range paths {
		if i, ok := e.byPath[p]; ok {
			for _, c := range e.files[i].chunks {
				pc := e.chunkPiece(&e.files[i], c)
				ps = append(ps, pc)
				size += pc.end - pc.start
			}
		}
		if size >= batch {
			flush()
			batch = min(2*batch, maxBatch)
		}
	}
	flush()
	return g.Wait()
}

// getBatchedPaced fetches pieces about batch bytes (16 MiB when 0) at a
// time, so that a whole layer's worth is never held in memory at once,
// calling wait (when not nil) before each batch.
func (e *EStargz) getBatchedPaced(ctx context.Context, ps []piece, batch int64, wait func(context.Context) error) error {
	if batch <= 0 {
		batch = 16 << 20
	}
	for len(ps) > 0 {
		if wait != nil {
			if err := wait(ctx); err != nil {
				return err
			}
		}
		var n int
		var sz int64
		for n < len(ps) && (n == 0 || sz < batch) {
			sz += ps[n].end - ps[n].start
			n++
		}
		if err := e.v.ensure(ctx, ps[:n]); err != nil {
			return err
		}
		ps = ps[n:]
	}
	return nil
}
