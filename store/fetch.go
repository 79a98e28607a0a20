package store

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/gzran"
)

// Tunables of a blob download; variables so tests can shorten them.
var (
	// blobRetries is how many times a download cut short is resumed within
	// one pull before it fails (the partial file stays for the next pull).
	blobRetries = 2
	// retryDelay is the pause before the first resume; it doubles.
	retryDelay = 200 * time.Millisecond
	// stallTimeout cancels a blob request that delivered nothing for so
	// long.
	stallTimeout = 60 * time.Second
)

// copyBufSize is the chunk the download pass moves at a time.
const copyBufSize = 256 << 10

// errSource marks errors of the blob's byte source (the network or the
// partial file), as opposed to errors in its content: the first kind keeps
// the partial download for a resume, the second discards it.
type errSource struct{ err error }

func (e *errSource) Error() string { return e.err.Error() }
func (e *errSource) Unwrap() error { return e.err }

// layerResult is what the download pass learnt about a layer.
type layerResult struct {
	tarSize int64
	fetched int64 // bytes that came over the network
	resumed bool  // a Range request continued a partial download
}

// fetchLayer makes the layer blob present and verified in blobs/, with its
// index in index/. It is a no-op for a blob already there. Two pulls of the
// same blob serialise on the blob's lock; the second finds it present.
func (s *Store) fetchLayer(ctx context.Context, c *registryClient, l Layer, p *progress) (int64, error) {
	present := func() (int64, bool, error) {
		n, ok, err := s.presentLayer(c.image, l)
		if ok && err == nil && !s.checkpointsUsable(l.Digest) {
			// Rebuilt below from the local blob, with the index.
			slog.Warn("gzip checkpoints of a stored layer are damaged; rebuilding them", "stage", "pull", "layer", l.Digest.String())
			ok = false
		}
		switch {
		case err != nil:
			p.done(l.Digest, -1, "failed")
		case ok:
			p.done(l.Digest, l.Size, "already present")
		}
		return n, ok, err
	}
	if n, ok, err := present(); err != nil || ok {
		return n, err
	}
	p.status(l.Digest, "waiting")
	lk, err := lockFile(ctx, s.lockPath("blob-"+l.Digest.Hex), true)
	if err != nil {
		return 0, err
	}
	defer lk.Unlock()
	if n, ok, err := present(); err != nil || ok {
		return n, err
	}
	if s.hasBlob(l.Digest, l.Size) {
		// The blob is here but its index is not (or is unreadable):
		// rebuild it from the local file in the same verifying pass.
		slog.Debug("indexing local layer", "stage", "pull", "layer", l.Digest.String())
		r, err := s.streamLayer(ctx, nil, l, p, true)
		if err == nil {
			p.done(l.Digest, l.Size, "indexed")
			return r.tarSize, nil
		}
		if !errors.Is(err, ErrDigestMismatch) && !errors.Is(err, layers.ErrCorrupt) {
			p.done(l.Digest, -1, "failed")
			return 0, err
		}
		// The stored blob went bad on disk: fetch it again.
		slog.Warn("stored layer does not verify; fetching it again", "stage", "pull", "layer", l.Digest.String(), "err", err)
		if err := os.Remove(s.BlobPath(l.Digest)); err != nil {
			return 0, fmt.Errorf("layer %s: removing the bad stored copy: %w", l.Digest, err)
		}
		p.reset(l.Digest)
	}
	p.status(l.Digest, "downloading")
	slog.Debug("fetching layer", "stage", "pull", "layer", l.Digest.String(), "bytes", l.Size)
	r, err := s.streamLayer(ctx, c, l, p, false)
	if err != nil && r.resumed && errors.Is(err, ErrDigestMismatch) {
		// The kept partial may be what was wrong (a crash of the machine can
		// leave garbage in it): start over once.
		slog.Debug("resumed blob did not verify; fetching it whole", "stage", "pull", "layer", l.Digest.String())
		p.reset(l.Digest)
		r, err = s.streamLayer(ctx, c, l, p, false)
	}
	if err != nil {
		p.done(l.Digest, -1, "failed")
		return 0, err
	}
	slog.Debug("layer stored", "stage", "pull", "layer", l.Digest.String(), "bytes", l.Size, "fetched", r.fetched, "resumed", r.resumed, "tarSize", r.tarSize)
	p.done(l.Digest, l.Size, "done")
	return r.tarSize, nil
}

// presentLayer reports whether the layer's blob, index and verified
// diff_id are all in the store, and its uncompressed size. A stored blob
// whose verified diff_id is not the one the image claims is an error: the
// config lies about the layer.
func (s *Store) presentLayer(image string, l Layer) (int64, bool, error) {
	if !s.hasBlob(l.Digest, l.Size) {
		return 0, false, nil
	}
	b, err := os.ReadFile(s.diffIDPath(l.Digest))
	if err != nil {
		return 0, false, nil
	}
	got := strings.TrimSpace(string(b))
	if d, err := v1.NewHash(got); err != nil || checkHash(d) != nil {
		// A damaged record, not a verified digest: verify again.
		return 0, false, nil
	}
	if got != l.DiffID.String() {
		return 0, false, fmt.Errorf("%s: layer %s: the image config gives diff_id %s, but the layer's uncompressed content has digest %s: %w", image, l.Digest, l.DiffID, got, ErrDigestMismatch)
	}
	ix, err := s.readIndex(l.Digest)
	if err != nil {
		return 0, false, nil
	}
	return ix.TarSize, true, nil
}

// CheckpointsPath returns the path of the gzip checkpoint index
// (layers/gzran, binary form) of the layer blob h, kept for gzip layers so
// they can be read at any uncompressed offset without inflating from the
// start; it may not exist.
func (s *Store) CheckpointsPath(h v1.Hash) string { return s.IndexPath(h) + checkpointsSuffix }

// Checkpoints returns the gzip checkpoint index of the layer blob h, built
// when it was pulled. Errors wrap fs.ErrNotExist for a blob that has none
// (not gzip, or pulled without checkpoints).
func (s *Store) Checkpoints(h v1.Hash) (*gzran.Index, error) {
	if err := checkHash(h); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(s.CheckpointsPath(h))
	if err != nil {
		return nil, fmt.Errorf("gzip checkpoints of layer %s: %w", h, err)
	}
	var ix gzran.Index
	if err := ix.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("gzip checkpoints of layer %s: %w", h, err)
	}
	return &ix, nil
}

// CheckpointsForReading returns the gzip checkpoint index of the layer
// blob h as Checkpoints does, but without loading its windows (most of
// its size): each is read from the store, and checked, when a read needs
// it (gzran.ReadFileDetached). What serving the blob needs, since most
// reads find their span already inflated in the store.
func (s *Store) CheckpointsForReading(h v1.Hash) (*gzran.Index, error) {
	if err := checkHash(h); err != nil {
		return nil, err
	}
	ix, err := gzran.ReadFileDetached(s.CheckpointsPath(h))
	if err != nil {
		return nil, fmt.Errorf("gzip checkpoints of layer %s: %w", h, err)
	}
	return ix, nil
}

// checkpointsUsable reports whether layer blob h's gzip checkpoints, when
// it has a file of them, read and check (a blob without is fine: not
// gzip, or pulled without checkpoints).
func (s *Store) checkpointsUsable(h v1.Hash) bool {
	_, err := s.Checkpoints(h)
	return err == nil || errors.Is(err, os.ErrNotExist)
}

const checkpointsSuffix = ".gzran"

// diffIDPath is the file beside a layer's index holding its verified
// diff_id.
func (s *Store) diffIDPath(h v1.Hash) string { return s.IndexPath(h) + diffIDSuffix }

const diffIDSuffix = ".diffid"

// readIndex reads the entry index of layer blob h.
func (s *Store) readIndex(h v1.Hash) (*layers.Index, error) {
	b, err := os.ReadFile(s.IndexPath(h))
	if err != nil {
		return nil, fmt.Errorf("index of layer %s: %w", h, err)
	}
	var ix layers.Index
	if err := ix.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("index of layer %s: %w", h, err)
	}
	return &ix, nil
}

// LayerIndex returns the entry index of the layer blob h, built when it was
// pulled.
func (s *Store) LayerIndex(h v1.Hash) (*layers.Index, error) {
	if err := checkHash(h); err != nil {
		return nil, err
	}
	return s.readIndex(h)
}

// streamLayer is the one pass over a layer blob: bytes from the partial
// file, then from the registry, are hashed (the blob digest) and appended to
// tmp/<hex>.partial while they are decompressed, hashed again (the diff_id)
// and indexed. local=true reads the verified blob itself instead (to rebuild
// a missing index). Only when everything matches are the index and the blob
// renamed into place; on a content error the partial file is removed, on a
// source error (network, cancel) it is kept for the next pull.
func (s *Store) streamLayer(ctx context.Context, c *registryClient, l Layer, p *progress, local bool) (res layerResult, err error) {
	image, from := "stored layer", "the stored copy has content"
	if c != nil {
		image, from = c.image, "registry sent content"
	}
	var src *blobSource
	var f *os.File
	if local {
		f, err = os.Open(s.BlobPath(l.Digest))
		if err != nil {
			return res, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		defer f.Close()
		src = &blobSource{f: f, have: l.Size, size: l.Size}
	} else {
		partial := s.partialPath(l.Digest)
		f, err = os.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return res, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		keep := true
		defer func() {
			if f != nil {
				f.Close()
			}
			if fi, err := os.Stat(partial); keep && err == nil && fi.Size() == 0 {
				keep = false // nothing worth resuming
			}
			if !keep {
				os.Remove(partial)
			}
		}()
		fi, serr := f.Stat()
		if serr != nil {
			return res, fmt.Errorf("layer %s: %w", l.Digest, serr)
		}
		have := fi.Size()
		if have > l.Size {
			if err := f.Truncate(0); err != nil {
				return res, fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			have = 0
		}
		src = &blobSource{ctx: ctx, c: c, h: l.Digest, f: f, have: have, size: l.Size}
		res.resumed = have > 0
		defer func() {
			res.fetched = src.fetched
			var se *errSource
			if err != nil && !errors.As(err, &se) && ctx.Err() == nil {
				keep = false
			}
		}()
	}

	pres, blobSum, diffSum, err := runPass(ctx, src, l, p)
	if blobSum != "" && blobSum != l.Digest.Hex {
		// Wrong bytes usually also fail to decompress; the mismatch is the
		// cause worth reporting.
		return res, fmt.Errorf("%s: layer %s: %s with digest sha256:%s: %w; nothing was kept", image, l.Digest, from, blobSum, ErrDigestMismatch)
	}
	if err != nil {
		return res, layerErr(image, l, err)
	}
	if blobSum != l.Digest.Hex {
		return res, fmt.Errorf("%s: layer %s: %s with digest sha256:%s: %w; nothing was kept", image, l.Digest, from, blobSum, ErrDigestMismatch)
	}
	if diffSum != l.DiffID.Hex {
		return res, fmt.Errorf("%s: layer %s: uncompressed content has digest sha256:%s, the image config says %s: %w; nothing was kept", image, l.Digest, diffSum, l.DiffID, ErrDigestMismatch)
	}
	res.tarSize = pres.ix.TarSize
	b, err := pres.ix.MarshalBinary()
	if err != nil {
		return res, fmt.Errorf("layer %s: encoding index: %w", l.Digest, err)
	}
	if pres.checkpoints != nil {
		cb, err := pres.checkpoints.MarshalBinary()
		if err != nil {
			return res, fmt.Errorf("layer %s: encoding gzip checkpoints: %w", l.Digest, err)
		}
		if err := s.writeFileAtomic(s.CheckpointsPath(l.Digest), cb); err != nil {
			return res, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
	}
	if err := s.writeFileAtomic(s.ChunkSumsPath(l.Digest), marshalChunkSums(pres.chunkSums, l.Size)); err != nil {
		return res, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	if err := s.writeFileAtomic(s.diffIDPath(l.Digest), []byte(l.DiffID.String()+"\n")); err != nil {
		return res, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	if err := s.writeFileAtomic(s.IndexPath(l.Digest), b); err != nil {
		return res, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	if local {
		return res, nil
	}
	if err := f.Sync(); err != nil {
		return res, fmt.Errorf("layer %s: syncing: %w", l.Digest, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return res, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	f.Close()
	f = nil
	if err := commitFile(s.partialPath(l.Digest), s.BlobPath(l.Digest)); err != nil {
		return res, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	return res, nil
}

func layerErr(image string, l Layer, err error) error {
	var ee *layers.EntryError
	switch {
	case errors.As(err, &ee):
		// The entry error already names the layer.
		return fmt.Errorf("%s: %w; the layer was refused and nothing kept", image, err)
	case errors.Is(err, layers.ErrCorrupt):
		if strings.Contains(err.Error(), l.Digest.String()) {
			return fmt.Errorf("%s: %w; nothing was kept", image, err)
		}
		return fmt.Errorf("%s: layer %s: %w; nothing was kept", image, l.Digest, err)
	}
	if errors.Is(err, errCutShort) {
		return fmt.Errorf("%s: layer %s: %w; run the pull again to resume", image, l.Digest, err)
	}
	return fmt.Errorf("%s: layer %s: %w", image, l.Digest, err)
}

// runPass moves the blob's bytes from src through both hashes and the
// indexer, in three goroutines (see pipeline.go): the producer (network,
// partial file, blob hash) runs ahead, the inflater reads the partial file
// behind it, and this goroutine hashes the tar and indexes it.
func runPass(ctx context.Context, src *blobSource, l Layer, p *progress) (*passResult, string, string, error) {
	blobHash := sha256.New()
	chunks := &chunkSummer{} // chunksums.go
	feed := newFileFeed()
	srcDone := make(chan error, 1)
	go func() {
		srcDone <- produce(src, feed, summingHash{Hash: blobHash, c: chunks}, l.Digest, p, newGateSlot(ctx))
	}()

	diffHash := sha256.New()
	// On a content error the producer still runs to the blob's end (at most
	// the size the manifest gives), so the blob digest can tell wrong bytes
	// from a bad but genuine layer.
	inflate := newGateSlot(ctx)
	pres, cerr := consume(&feedReader{f: src.f, feed: feed, slot: inflate, size: l.Size}, diffHash, l.Digest.String(), inflate, newGateSlot(ctx))
	serr := <-srcDone
	if serr != nil {
		return nil, "", "", serr
	}
	blobSum := hex.EncodeToString(blobHash.Sum(nil))
	if cerr != nil {
		return nil, blobSum, "", cerr
	}
	pres.chunkSums = chunks.Sums()
	return pres, blobSum, hex.EncodeToString(diffHash.Sum(nil)), nil
}

var (
	errConsumerDone = errors.New("consumer stopped")
	errCutShort     = errors.New("download cut short")
)

// produce reads src to its end, hashing it, and publishes in feed how much
// of the partial file is final; a source error is returned as *errSource.
func produce(src *blobSource, feed *fileFeed, h hash.Hash, d v1.Hash, p *progress, slot *gateSlot) error {
	buf := make([]byte, copyBufSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			slot.acquire()
			h.Write(buf[:n])
			slot.release()
			p.add(d, int64(n))
			feed.advance(int64(n))
		}
		if err == io.EOF {
			feed.finish(io.EOF)
			return nil
		}
		if err != nil {
			se := &errSource{err}
			feed.finish(se)
			return se
		}
	}
}

// passResult is what consume learnt from a layer's stream.
type passResult struct {
	ix *layers.Index
	// checkpoints is the gzip checkpoint index (layers/gzran) of a gzip
	// blob, for reading it at any offset without inflating from the start;
	// nil for other compressions.
	checkpoints *gzran.Index
	// chunkSums are the CRC-32C of each BlobChunkSize bytes of the blob
	// (chunksums.go).
	chunkSums []uint32
}

// useCheckpoints makes the pull inflate gzip layers with layers/gzran,
// which records checkpoints while it inflates; false uses layers.Decompress
// (klauspost/compress) and keeps no checkpoints.
var useCheckpoints = true

// consume decompresses the blob, hashes the tar, indexes it, and reads both
// streams to their ends (so trailing bytes are hashed and checked too).
func consume(r *feedReader, diffHash hash.Hash, layer string, inflate, index *gateSlot) (*passResult, error) {
	peek, err := r.peek(4)
	if err != nil {
		return nil, err
	}
	var dr io.Reader
	var gz *gzran.Indexer
	var br io.Reader = r
	if useCheckpoints && layers.DetectCompression(peek) == layers.Gzip {
		// gzran reads in chunks of its own: no bufio copy in between.
		gz = gzran.NewIndexer(r, gzran.DefaultSpan)
		dr = &gzranReader{r: gz}
	} else {
		// Decompress's decoders may read in goroutines of their own (zstd),
		// outside the gate's accounting: leave this pass ungated, so no
		// token is held while waiting for them.
		r.slot, inflate = nil, nil
		bb := bufio.NewReaderSize(r, copyBufSize)
		br = bb
		d, _, err := layers.Decompress(bb)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		dr = d
	}
	// The inflater runs in its own goroutine; this one hashes the tar (as
	// bp hands it over) and indexes it.
	bp := newBufPipe(diffHash, index)
	inflated := make(chan struct{})
	go func() {
		defer close(inflated)
		bp.pump(dr, inflate)
	}()
	ix, err := layers.IndexLayer(bp, layer)
	if err == nil {
		_, err = io.Copy(io.Discard, bp)
	}
	index.release()
	bp.close()
	<-inflated
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, err
	}
	res := &passResult{ix: ix}
	if gz != nil {
		if res.checkpoints, err = gz.Index(); err != nil {
			return nil, fmt.Errorf("%w: %w", layers.ErrCorrupt, err)
		}
	}
	return res, nil
}

// gzranReader reports gzran's stream errors as layers.ErrCorrupt, as
// layers.Decompress does for its decoders.
type gzranReader struct {
	r io.Reader
}

func (g *gzranReader) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, layers.ErrCorrupt) {
		var se *errSource
		if !errors.As(err, &se) {
			err = fmt.Errorf("%w: gzip stream: %w", layers.ErrCorrupt, err)
		}
	}
	return n, err
}

// blobSource yields a blob's bytes: first those already in the partial file
// f, then from the registry, appending them to f. Cut-short responses are
// resumed with Range requests (blobRetries times); a registry that ignores
// Range (200) has the bytes already held skipped.
type blobSource struct {
	ctx  context.Context
	c    *registryClient // nil: f holds the whole blob
	h    v1.Hash
	f    *os.File
	have int64 // bytes of f that precede the network part
	size int64 // the blob's size from the manifest

	pos     int64 // bytes handed out so far
	fetched int64
	body    io.ReadCloser
	cancel  context.CancelFunc
	timer   *time.Timer
	retries int
}

func (b *blobSource) Read(p []byte) (int, error) {
	if b.pos >= b.size {
		b.closeBody()
		return 0, io.EOF
	}
	if rest := b.size - b.pos; int64(len(p)) > rest {
		p = p[:rest]
	}
	if b.pos < b.have {
		if rest := b.have - b.pos; int64(len(p)) > rest {
			p = p[:rest]
		}
		n, err := b.f.ReadAt(p, b.pos)
		b.pos += int64(n)
		if err == io.EOF && n > 0 {
			err = nil
		}
		if err != nil {
			return n, fmt.Errorf("reading partial download: %w", err)
		}
		return n, nil
	}
	if b.c == nil {
		return 0, fmt.Errorf("blob file is shorter than %d bytes", b.size)
	}
	for {
		if b.body == nil {
			if err := b.open(); err != nil {
				return 0, err
			}
		}
		n, err := b.body.Read(p)
		if n > 0 {
			b.timer.Reset(stallTimeout)
			if _, werr := b.f.WriteAt(p[:n], b.pos); werr != nil {
				return 0, fmt.Errorf("writing partial download: %w", werr)
			}
			b.pos += int64(n)
			b.fetched += int64(n)
			return n, nil
		}
		if err == nil {
			continue
		}
		// The response ended (EOF before the size) or broke.
		stalled := !b.timer.Stop()
		b.closeBody()
		if b.ctx.Err() != nil {
			return 0, b.ctx.Err()
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if stalled {
			err = fmt.Errorf("no data for %v: %w", stallTimeout, err)
		}
		if b.retries >= blobRetries {
			return 0, fmt.Errorf("%w at byte %d of %d: %w", errCutShort, b.pos, b.size, err)
		}
		b.retries++
		slog.Debug("blob download cut short; resuming", "stage", "pull", "blob", b.h.String(), "at", b.pos, "err", err)
		select {
		case <-time.After(retryDelay << (b.retries - 1)):
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	}
}

// open starts the request for the bytes from b.pos on.
func (b *blobSource) open() error {
	ctx, cancel := context.WithCancel(b.ctx)
	resp, err := b.c.blob(ctx, b.h, b.pos, b.size)
	if err != nil {
		cancel()
		return err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, ok := contentRangeStart(resp.Header.Get("Content-Range"))
		if !ok || start != b.pos {
			resp.Body.Close()
			cancel()
			return fmt.Errorf("registry answered range request at %d with Content-Range %q", b.pos, resp.Header.Get("Content-Range"))
		}
		slog.Debug("resuming blob download", "stage", "pull", "blob", b.h.String(), "at", b.pos)
	case http.StatusOK:
		if b.pos > 0 {
			// No ranges here: skip what we hold already.
			slog.Debug("registry ignores ranges; skipping held bytes", "stage", "pull", "blob", b.h.String(), "bytes", b.pos)
			if _, err := io.CopyN(io.Discard, resp.Body, b.pos); err != nil {
				resp.Body.Close()
				cancel()
				return fmt.Errorf("skipping %d held bytes: %w", b.pos, err)
			}
		}
	}
	b.body, b.cancel = resp.Body, cancel
	b.timer = time.AfterFunc(stallTimeout, cancel)
	return nil
}

func (b *blobSource) closeBody() {
	if b.body != nil {
		b.timer.Stop()
		b.body.Close()
		b.cancel()
		b.body = nil
	}
}

// contentRangeStart parses "bytes START-END/TOTAL".
func contentRangeStart(h string) (int64, bool) {
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, false
	}
	i := strings.IndexByte(rest, '-')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(rest[:i], 10, 64)
	return n, err == nil
}
