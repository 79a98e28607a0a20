package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/dabba/dabba/fs"
	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/remote"
)

// LazyOptions configure OpenLazy.
type LazyOptions struct {
	// Platform and Insecure are as for Pull.
	Platform *v1.Platform
	Insecure bool
	// Pull says whether a tag an earlier lazy run resolved is asked again
	// (PullNewer, PullAlways) or taken as it was (PullMissing, the default,
	// and PullNever): a warm run whose reads are all cached then makes no
	// request at all.
	Pull PullPolicy
	// CacheSize caps the shared chunk cache (remote.DefaultCacheSize when
	// 0; --cache-size).
	CacheSize int64
	// RequirePinned uses only an index artifact pinned on this machine by
	// `dabba index push`; an unpinned one found through the referrers API
	// is ignored (its layers are then fetched whole).
	RequirePinned bool
	// NoPrefetch skips the prefetch at open (the files learnt from earlier
	// runs and eStargz's prefetch landmark). NoRecord records nothing for
	// later runs.
	NoPrefetch bool
	NoRecord   bool
	// Notice receives the one line saying which layers were fetched whole
	// and how to make them lazy; nil: none (it is in LazyImage.Notice).
	Notice io.Writer
	// Progress receives the progress of layers fetched whole, as Pull's.
	Progress io.Writer
	// Fetch tunes the range fetchers (nil: the defaults); TempDir defaults
	// to the store's tmp/.
	Fetch *remote.Options
}

// LazyKind says how a layer of a LazyImage is read.
type LazyKind string

// Kinds of lazy layers.
const (
	// KindEStargz: by its eStargz TOC, chunks fetched by range.
	KindEStargz LazyKind = "estargz"
	// KindIndexed: a gzip layer by its dabba index, spans fetched by range.
	KindIndexed LazyKind = "indexed"
	// KindLocal: the blob was already in the store.
	KindLocal LazyKind = "local"
	// KindFetched: no index; the blob was fetched whole into the store.
	KindFetched LazyKind = "fetched"
)

// LazyLayer is one layer of a LazyImage.
type LazyLayer struct {
	Layer
	Kind  LazyKind
	Index *layers.Index

	r     io.ReaderAt
	f     *remote.Fetcher
	wf    *remote.Fetcher // of the windows blob of a detached index
	gz    *remote.GzipLayer
	es    *remote.EStargz
	close func() error
	files []int // indexes of Index.Entries of regular files, by offset
	// bad, once set, fails every read: the background check found the
	// layer's index (an unpinned artifact) not to describe the layer.
	bad      atomic.Pointer[error]
	verified atomic.Bool
}

// Verified reports whether the layer's bytes and entries are known to be
// the layer's own: always for local, fetched and eStargz layers and for a
// pinned index; for an unpinned index once the background fetch has
// checked the whole layer against its diff_id.
func (ll *LazyLayer) Verified() bool { return ll.verified.Load() }

// LazyImage is an image opened for lazy reading: metadata now, file bytes
// when read. It has the shape fs needs: Tree for fs.New, and ReadAt
// (fs.LayerReader). It is safe for concurrent use.
type LazyImage struct {
	// Image describes the image (Size is 0: the uncompressed sizes are not
	// all known).
	Image  *Image
	Layers []*LazyLayer
	// Tree is the merged view of the layers (layers.Merge of their
	// indexes).
	Tree *layers.Tree
	// IndexArtifact is the dabba index artifact used (zero when none);
	// IndexPinned says it was the one pinned by `dabba index push` here.
	IndexArtifact v1.Hash
	IndexPinned   bool
	// Notice is the line about layers fetched whole ("" when none).
	Notice string

	s          *Store
	ctx        context.Context // ends with Close
	cancel     context.CancelFunc
	indexBytes int64
	wholeBytes int64
	bg         sync.WaitGroup
	bgErr      atomic.Pointer[error]
	prefetched chan struct{}
	prefErr    error

	recording bool
	recMu     sync.Mutex
	recSeen   map[[2]int]bool
	recFiles  []string
	recBlocks map[block]bool
	recOrder  []block
	recBytes  int64
	learned   []string
	// learnedRanges are this machine's record; prefetch is what the open
	// prefetches: those, else the index artifact's list.
	learnedRanges []learnedRange
	prefetch      []learnedRange
	prefetchFrom  string

	// act counts the fetches of the command's reads (and the prefetch)
	// in flight, so the background fetch can give way to them.
	act       *remote.Activity
	closeOnce sync.Once
}

// OpenLazy opens ref for lazy reading. An image a pull left whole in the
// store is opened from there, without the network. Otherwise it resolves the manifest and config
// (verified, and kept in the store's blobs/) without downloading the
// layers; each layer is then, in order of preference:
//
//  1. already in the store (a pull fetched it): read locally;
//  2. eStargz (the containerd.io/snapshot/stargz/toc.digest annotation):
//     remote.OpenEStargz, the TOC checked against the annotation, every
//     chunk against its digest;
//  3. covered by a dabba index artifact (`dabba index push`), the one
//     pinned in this store or else one found through the referrers API:
//     remote.NewGzipLayer, every span checked against its digest;
//  4. none of these: fetched whole (in parallel, through the verifying
//     pull path) while the rest stays lazy; Notice names these layers and
//     says how to make them lazy.
//
// Trust. A pinned index was built here from blobs verified against the
// layer digests, so every byte served is the layer's. An unpinned index
// comes from whoever can push to the repository: OpenLazy checks that it
// refers to this manifest, that each blob names its layer, that its sizes
// agree with the layer's compressed size and with each other and that every
// file lies inside the tar; spans are verified against its digests. What
// it cannot check without the whole layer is that the entries (names,
// owners, modes) and span digests are the layer's own: with an honest
// registry a forged span digest only gives EIO, but a forged entry table
// could name the layer's bytes differently. The background fetch closes
// that gap for layers it completes (see StartBackground); RequirePinned
// refuses unpinned indexes altogether.
//
// The learnt files of earlier runs (and eStargz landmark files) are
// prefetched in the background at open (WaitPrefetch waits); the files
// this run reads are recorded and saved by Close for the next run.
func (s *Store) OpenLazy(ctx context.Context, ref string, opts LazyOptions) (*LazyImage, error) {
	o, err := s.StartLazy(ctx, ref, opts)
	if err != nil {
		return nil, err
	}
	return o.Wait()
}

// LazyOpening is a lazy image being opened (StartLazy): its manifest and
// config are resolved (Image), its layers, their indexes and the merged
// tree are being opened in the background.
type LazyOpening struct {
	// Image is the image as resolved; LazyImage.Image once open.
	Image *Image
	done  chan struct{}
	li    *LazyImage
	err   error
}

// Wait returns the open image, or why it could not be opened.
func (o *LazyOpening) Wait() (*LazyImage, error) {
	<-o.done
	return o.li, o.err
}

// Close waits for the opening and closes the image, for a caller that
// gives up on it.
func (o *LazyOpening) Close() {
	if li, err := o.Wait(); err == nil {
		li.Close()
	}
}

func startOpening(img *Image, open func() (*LazyImage, error)) *LazyOpening {
	o := &LazyOpening{Image: img, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		o.li, o.err = open()
	}()
	return o
}

// StartLazy is OpenLazy in two steps, so that a caller can do other work
// while the layers open (`dabba run` sets up the container's namespaces):
// it returns once the manifest and config are resolved (the errors of
// that step, a missing image or an unreachable registry, are its own), and
// opens the rest in the background; LazyOpening.Wait returns the result.
func (s *Store) StartLazy(ctx context.Context, ref string, opts LazyOptions) (*LazyOpening, error) {
	return s.startLazy(ctx, ref, opts, true)
}

func (s *Store) startLazy(ctx context.Context, ref string, opts LazyOptions, tryPulled bool) (*LazyOpening, error) {
	r, err := ParseReference(ref, opts.Insecure)
	if err != nil {
		return nil, err
	}
	if opts.Pull == "" {
		opts.Pull = PullMissing
	}
	if tryPulled && (opts.Pull == PullMissing || opts.Pull == PullNever) {
		if img, err := s.Lookup(ref); err == nil {
			return startOpening(img, func() (*LazyImage, error) {
				if li, err := s.openPulled(img, opts); li != nil || err != nil {
					return li, err
				}
				// A layer of the pulled image is not in the store (any
				// more): open the same image from its registry.
				o, err := s.startLazy(ctx, r.Context().Digest(img.ManifestDigest.String()).String(), opts, false)
				if err != nil {
					return nil, err
				}
				return o.Wait()
			}), nil
		}
	}
	c, err := newLazyRegistryClient(r, opts.Insecure)
	if err != nil {
		return nil, err
	}
	// The index artifact is looked for as soon as the manifest is known,
	// while the config is fetched: round trips are most of a cold start.
	type indexResult struct {
		fi  *foundIndex
		err error
	}
	indexc := make(chan indexResult, 1)
	indexStarted := false
	img, m, err := s.resolveLazy(ctx, c, r.Identifier(), opts.Platform, opts.Pull, opts.Notice, func(md v1.Hash, m *v1.Manifest) {
		var ls []Layer
		want := false
		for _, d := range m.Layers {
			ls = append(ls, Layer{Digest: d.Digest, Size: d.Size, MediaType: d.MediaType})
			want = want || d.Annotations[remote.TOCDigestAnnotation] == ""
		}
		if !want {
			return
		}
		indexStarted = true
		go func() {
			fi, err := s.findIndex(ctx, c, md, ls, opts.RequirePinned)
			indexc <- indexResult{fi, err}
		}()
	})
	if err != nil {
		return nil, err
	}
	findIndex := func() (*foundIndex, error) {
		if indexStarted {
			res := <-indexc
			return res.fi, res.err
		}
		return s.findIndex(ctx, c, img.ManifestDigest, img.Layers, opts.RequirePinned)
	}
	return startOpening(img, func() (*LazyImage, error) {
		return s.openLayers(ctx, r, c, img, m, opts, findIndex)
	}), nil
}

// openLayers opens the layers of img (manifest m) for OpenLazy;
// findIndex returns the index artifact, asked for when the first layer
// needs it.
func (s *Store) openLayers(ctx context.Context, r name.Reference, c *registryClient, img *Image, m *v1.Manifest, opts LazyOptions, findIndex func() (*foundIndex, error)) (li *LazyImage, err error) {
	cache, err := remote.OpenCache(s.CacheDir(), opts.CacheSize)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	li = &LazyImage{Image: img, s: s, ctx: lctx, cancel: cancel, prefetched: make(chan struct{}), recording: !opts.NoRecord, recSeen: map[[2]int]bool{}, recBlocks: map[block]bool{}}
	opened := li // `return nil, err` clears li before this runs
	defer func() {
		if err != nil {
			opened.closeLayers()
			cancel()
		}
	}()

	fopts := remote.Options{}
	if opts.Fetch != nil {
		fopts = *opts.Fetch
	}
	li.act = new(remote.Activity)
	fopts.Activity = li.act
	if fopts.TempDir == "" {
		fopts.TempDir = s.tmpDir()
	}
	if fopts.Refresh == nil {
		fopts.Refresh = func(ctx context.Context) (http.RoundTripper, error) {
			nc, err := newRegistryClient(ctx, r, opts.Insecure)
			if err != nil {
				return nil, err
			}
			return nc.client.Transport, nil
		}
	}
	newFetcher := func(l Layer) (*remote.Fetcher, error) {
		return remote.NewFetcher(c.client.Transport, c.url("blobs", l.Digest.String()), l.Digest, l.Size, &fopts)
	}

	esg, esctx := errgroup.WithContext(ctx)
	defer esg.Wait() // on an early return, before the layers are closed
	var need []int   // layers without a lazy way, fetched whole
	var idx *foundIndex
	var indexErr error
	idxLooked := false
	for i, l := range img.Layers {
		ll := &LazyLayer{Layer: l}
		li.Layers = append(li.Layers, ll)
		if ok, err := s.openLocal(img.Name, ll); err != nil {
			return nil, err
		} else if ok {
			continue
		}
		if toc := m.Layers[i].Annotations[remote.TOCDigestAnnotation]; toc != "" {
			// The layers' footers and TOCs are fetched in parallel.
			esg.Go(func() error {
				f, err := newFetcher(l)
				if err != nil {
					return fmt.Errorf("%s: layer %s: %w", img.Name, l.Digest, err)
				}
				es, err := remote.OpenEStargz(esctx, f, toc, cache)
				if err != nil {
					f.Close()
					return fmt.Errorf("%s: layer %s: %w", img.Name, l.Digest, err)
				}
				ll.Kind, ll.Index, ll.r, ll.f, ll.es, ll.close = KindEStargz, es.Index(), es, f, es, f.Close
				ll.verified.Store(true)
				return nil
			})
			continue
		}
		if !idxLooked {
			idxLooked = true
			if idx, err = findIndex(); err != nil {
				if ctx.Err() != nil {
					return nil, err
				}
				// An index that cannot be used must not stop the run:
				// its layers are fetched whole, and the notice says why.
				slog.Warn("no usable dabba index; fetching layers whole", "stage", "lazy", "image", img.Name, "err", err)
				indexErr, idx = err, nil
			}
			if idx != nil {
				li.IndexArtifact, li.IndexPinned, li.indexBytes = idx.artifact, idx.pinned, idx.fetched
			}
		}
		if x := idx.layer(l.Digest); x != nil {
			f, err := newFetcher(l)
			if err != nil {
				return nil, fmt.Errorf("%s: layer %s: %w", img.Name, l.Digest, err)
			}
			var win *remote.Windows
			if x.Windows != nil {
				wd := idx.windows[l.Digest]
				wf, err := remote.NewFetcher(c.client.Transport, c.url("blobs", wd.Digest.String()), wd.Digest, wd.Size, &fopts)
				if err != nil {
					f.Close()
					return nil, fmt.Errorf("%s: windows of layer %s: %w", img.Name, l.Digest, err)
				}
				win = &remote.Windows{F: wf, Index: x.Windows}
				ll.wf = wf
			}
			closeAll := func() error {
				if win != nil {
					win.F.Close()
				}
				return f.Close()
			}
			gz, err := remote.NewGzipLayerWindows(f, x.Checkpoints, x.Spans, win, cache)
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("%s: %w", img.Name, err)
			}
			ll.Kind, ll.Index, ll.r, ll.f, ll.gz, ll.close = KindIndexed, x.Entries, gz, f, gz, closeAll
			ll.verified.Store(idx.pinned || s.layerVerified(idx.artifact, l.Digest, l.DiffID))
			continue
		}
		need = append(need, i)
	}

	if err := esg.Wait(); err != nil {
		return nil, err
	}
	if len(need) > 0 {
		if err := s.fetchWhole(ctx, c, li, need, opts.Progress); err != nil {
			return nil, err
		}
		var names []string
		gzipOnly := true
		for _, i := range need {
			names = append(names, shortDigest(li.Layers[i].Digest))
			li.wholeBytes += li.Layers[i].Size
			if c, err := s.blobCompression(li.Layers[i].Digest); err == nil && c != layers.Gzip {
				gzipOnly = false
			}
		}
		how := fmt.Sprintf("run `dabba index push %s` to make them lazy", img.Name)
		if !gzipOnly {
			how += " (gzip layers only; zstd and plain tar layers are lazy only as eStargz)"
		}
		li.Notice = fmt.Sprintf("%s: %d of %d layers (%s) have no lazy index and were fetched whole; %s",
			img.Name, len(need), len(img.Layers), strings.Join(names, ", "), how)
		if indexErr != nil {
			li.Notice += fmt.Sprintf(" (the index found was refused: %v)", indexErr)
		}
		if opts.Notice != nil {
			fmt.Fprintln(opts.Notice, li.Notice)
		}
	}

	var fromIndex []learnedRange
	if idx != nil {
		fromIndex = idx.prefetch
	}
	if err := li.finish(opts, fromIndex); err != nil {
		return nil, err
	}
	slog.Debug("lazy image open", "stage", "lazy", "image", img.Name, "layers", len(li.Layers), "whole", len(need), "artifact", li.IndexArtifact.String(), "pinned", li.IndexPinned, "learned", len(li.learned))
	return li, nil
}

// openPulled opens img, which a pull left in the store (as `dabba run`
// finds an image in the store first): no network at all. It returns nil,
// nil when a layer is not there after all.
func (s *Store) openPulled(img *Image, opts LazyOptions) (*LazyImage, error) {
	ctx, cancel := context.WithCancel(context.Background())
	li := &LazyImage{Image: img, s: s, ctx: ctx, cancel: cancel, prefetched: make(chan struct{}), recording: !opts.NoRecord, recSeen: map[[2]int]bool{}, recBlocks: map[block]bool{}}
	for _, l := range img.Layers {
		ll := &LazyLayer{Layer: l}
		li.Layers = append(li.Layers, ll)
		ok, err := s.openLocal(img.Name, ll)
		if err != nil || !ok {
			li.closeLayers()
			cancel()
			return nil, err
		}
	}
	if err := li.finish(opts, nil); err != nil {
		li.closeLayers()
		cancel()
		return nil, err
	}
	return li, nil
}

// finish merges the layers' indexes (or reads the tree a run before saved
// of the same indexes) and starts the prefetch.
func (li *LazyImage) finish(opts LazyOptions, fromIndex []learnedRange) error {
	path := li.treePath()
	if path != "" {
		t, err := li.s.readTree(path, li.Image.Name, len(li.Layers))
		switch {
		case err == nil:
			li.Tree = t
		case !errors.Is(err, os.ErrNotExist):
			slog.Warn("saved merged tree unusable; merging the layers again", "stage", "lazy", "err", err)
		}
	}
	if li.Tree == nil {
		var err error
		if li.Tree, err = layers.Merge(li.Indexes()); err != nil {
			return fmt.Errorf("%s: %w", li.Image.Name, err)
		}
		if path != "" {
			// Off the start's path (Close waits for it).
			t := li.Tree
			li.bg.Add(1)
			go func() {
				defer li.bg.Done()
				if err := li.s.saveTree(path, t); err != nil {
					slog.Debug("merged tree not saved", "stage", "lazy", "image", li.Image.Name, "err", err)
				}
			}()
		}
	}
	for _, ll := range li.Layers {
		ll.files = regularByOffset(ll.Index)
	}
	li.learned = li.s.readLearned(li.Image.ManifestDigest)
	li.learnedRanges = li.s.readLearnedRanges(li.Image.ManifestDigest)
	switch {
	case len(li.learnedRanges) > 0:
		li.prefetch, li.prefetchFrom = coalesce(li.learnedRanges, coalesceGap), "learned here"
	case len(fromIndex) > 0:
		li.prefetch, li.prefetchFrom = fromIndex, "index artifact"
	}
	if opts.NoPrefetch {
		close(li.prefetched)
	} else {
		go li.startPrefetch()
	}
	return nil
}

// resolveLazy fetches (or reads from the store) the manifest and config of
// id, choosing the platform from an index as Pull does, and keeps them in
// blobs/.
//
// onManifest, when not nil, is called with the platform manifest as soon
// as it is parsed, before the config is fetched.
func (s *Store) resolveLazy(ctx context.Context, c *registryClient, id string, platform *v1.Platform, policy PullPolicy, notice io.Writer, onManifest func(v1.Hash, *v1.Manifest)) (*Image, *v1.Manifest, error) {
	want := platform
	if want == nil {
		want = HostPlatform()
	}
	b, mt, md, err := s.manifestKnown(ctx, c, id, policy, notice)
	if err != nil {
		return nil, nil, err
	}
	var indexDigest *v1.Hash
	if mt.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: parsing image index: %w", c.image, err)
		}
		child, err := choosePlatform(c.image, idx, want)
		if err != nil {
			return nil, nil, err
		}
		d := md
		indexDigest = &d
		if err := s.putBlob(ctx, md, b); err != nil {
			return nil, nil, err
		}
		if b, mt, md, err = s.manifestKnown(ctx, c, child.Digest.String(), policy, notice); err != nil {
			return nil, nil, err
		}
		if mt.IsIndex() {
			return nil, nil, fmt.Errorf("%s: the index entry for %s is another index; nested indexes are not supported", c.image, platformString(want))
		}
	}
	switch mt {
	case types.DockerManifestSchema1, types.DockerManifestSchema1Signed:
		return nil, nil, fmt.Errorf("%s: it is a Docker schema 1 image, which dabba does not support; push it again with a current tool", c.image)
	}
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: parsing manifest %s: %w", c.image, md, err)
	}
	if err := checkHash(m.Config.Digest); err != nil {
		return nil, nil, fmt.Errorf("%s: config: %w", c.image, err)
	}
	if err := s.putBlob(ctx, md, b); err != nil {
		return nil, nil, err
	}
	if onManifest != nil {
		onManifest(md, m)
	}
	var cfgBytes []byte
	if s.hasBlob(m.Config.Digest, -1) {
		cfgBytes, err = s.readBlob(m.Config.Digest)
	} else if cfgBytes, err = c.smallBlob(ctx, m.Config.Digest); err == nil {
		err = s.putBlob(ctx, m.Config.Digest, cfgBytes)
	}
	if err != nil {
		return nil, nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cfgBytes))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: parsing config %s: %w", c.image, m.Config.Digest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, nil, fmt.Errorf("%s: manifest lists %d layers but the config %d diff_ids: the image is broken", c.image, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	img := &Image{Name: c.image, Names: []string{c.image}, ID: m.Config.Digest.Hex, ManifestDigest: md, IndexDigest: indexDigest, Config: cfg}
	for i, ld := range m.Layers {
		if err := checkHash(ld.Digest); err != nil {
			return nil, nil, fmt.Errorf("%s: layer %d: %w", c.image, i, err)
		}
		if err := checkHash(cfg.RootFS.DiffIDs[i]); err != nil {
			return nil, nil, fmt.Errorf("%s: diff_id %d: %w", c.image, i, err)
		}
		if ld.Size < 0 {
			return nil, nil, fmt.Errorf("%s: layer %s has negative size %d", c.image, ld.Digest, ld.Size)
		}
		if !isLayerMediaType(ld.MediaType) {
			return nil, nil, fmt.Errorf("%s: layer %s has media type %q, which is not a layer dabba can use", c.image, ld.Digest, ld.MediaType)
		}
		img.Layers = append(img.Layers, Layer{Digest: ld.Digest, DiffID: cfg.RootFS.DiffIDs[i], Size: ld.Size, MediaType: ld.MediaType})
	}
	return img, m, nil
}

// lazyTagPath is lazy/tags/<sha256 of repository:tag>: the digest a lazy
// run last resolved the tag to.
func (s *Store) lazyTagPath(repo, tag string) string {
	h := sha256.Sum256([]byte(repo + ":" + tag))
	return filepath.Join(s.root, "lazy", "tags", hex.EncodeToString(h[:]))
}

// manifestKnown is c.manifest(id), except that a manifest the store
// already holds (from an earlier lazy run or pull) is not fetched again: a
// digest is looked up in the store; a tag an earlier lazy run resolved
// (lazy/tags/) is taken as it was under PullMissing and PullNever, and
// asked with a HEAD request under PullNewer and PullAlways (so a moved tag
// is noticed; when the registry does not answer, PullNewer keeps the
// digest known here). A tag never resolved here goes straight to GET,
// saving a round trip. notice gets the warning of that fallback. PullNever refuses to ask the registry at all.
func (s *Store) manifestKnown(ctx context.Context, c *registryClient, id string, policy PullPolicy, notice io.Writer) ([]byte, types.MediaType, v1.Hash, error) {
	d, err := v1.NewHash(id)
	known := err == nil && checkHash(d) == nil
	tag := !known
	tagFile := s.lazyTagPath(c.repo.Name(), id)
	if tag {
		local, ok := s.lazyTag(tagFile)
		switch {
		case !ok:
		case policy == PullMissing || policy == PullNever:
			d, known = local, true
		default:
			if d, known = c.headManifest(ctx, id); !known && policy == PullNewer {
				if notice != nil {
					fmt.Fprintf(notice, "warning: --pull newer: registry %s did not answer for %s; running the image resolved before (%s)\n", c.repo.RegistryStr(), c.image, shortDigest(local))
				}
				d, known = local, true
			}
		}
	}
	if known && s.hasBlob(d, -1) {
		if b, err := s.readBlob(d); err == nil && contentDigest(b) == d && len(b) <= maxManifestSize {
			if mt := sniffMediaType(b); mt != "" {
				return b, mt, d, nil
			}
		}
	}
	if policy == PullNever {
		return nil, "", v1.Hash{}, fmt.Errorf("%s: %w: it was neither pulled nor run lazily from this store, and --pull never forbids asking the registry (drop --pull never, or dabba pull it first)", c.image, ErrNotFound)
	}
	b, mt, md, err := c.manifest(ctx, id)
	if err == nil && tag {
		// Noted for the next run (the manifest itself is kept in blobs/
		// by the caller).
		if os.MkdirAll(filepath.Dir(tagFile), 0o700) == nil {
			s.writeFileAtomic(tagFile, []byte(md.String()+"\n"))
		}
	}
	return b, mt, md, err
}

// lazyTag reads the digest a tag file records; false when there is none
// or it is damaged.
func (s *Store) lazyTag(path string) (v1.Hash, bool) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 200 {
		return v1.Hash{}, false
	}
	d, err := v1.NewHash(strings.TrimSpace(string(b)))
	if err != nil || checkHash(d) != nil {
		return v1.Hash{}, false
	}
	return d, true
}

// openLocal makes ll read its blob from the store when a pull left it
// there (blob, index and verified diff_id); false when it is not there.
func (s *Store) openLocal(image string, ll *LazyLayer) (bool, error) {
	if _, ok, err := s.presentLayer(image, ll.Layer); err != nil || !ok {
		return false, err
	}
	ix, err := s.readIndex(ll.Digest)
	if err != nil {
		return false, nil
	}
	comp, err := s.blobCompression(ll.Digest)
	if err != nil {
		return false, err
	}
	f, err := os.Open(s.BlobPath(ll.Digest))
	if err != nil {
		return false, nil
	}
	closeFn := f.Close
	switch comp {
	case layers.Uncompressed:
		ll.r = f
	case layers.Gzip:
		// As a FUSE rootfs from the store reads it (fs.OpenBlobs): each
		// read checked against the blob's chunk checksums, inflated
		// spans kept in memory and in inflated/ for later containers.
		// A bare gzran reader would inflate up to a whole span per read.
		gz, err := s.Checkpoints(ll.Digest)
		if errors.Is(err, os.ErrNotExist) {
			// Pulled without checkpoints: as zstd, below.
			return s.openDecompressed(ll, ix, f)
		}
		f.Close()
		if err != nil {
			return false, fmt.Errorf("%s: %w: the store's copy is damaged; `dabba pull %s` rebuilds it", image, err, image)
		}
		sums, err := s.ChunkSums(ll.Digest)
		if err != nil {
			return false, nil
		}
		b, err := fs.OpenBlobs(s.tmpDir(), []fs.Blob{{
			Name: ll.Digest.String(), Path: s.BlobPath(ll.Digest),
			ChunkSums: sums, ChunkSize: BlobChunkSize,
			Checkpoints: gz, Index: ix, SpanDir: s.InflatedDir(ll.Digest),
		}})
		if err != nil {
			return false, nil
		}
		ll.r, closeFn = blobReader{b}, b.Close
	default:
		return s.openDecompressed(ll, ix, f)
	}
	ll.setLocal(ix, closeFn)
	return true, nil
}

// openDecompressed makes ll read the blob f (zstd, or gzip without
// checkpoints) decompressed once into an unlinked file; it closes f.
func (s *Store) openDecompressed(ll *LazyLayer, ix *layers.Index, f *os.File) (bool, error) {
	t, err := decompressToTemp(f, s.tmpDir())
	f.Close()
	if err != nil {
		return false, fmt.Errorf("layer %s: %w", ll.Digest, err)
	}
	ll.r = t
	ll.setLocal(ix, t.Close)
	return true, nil
}

// setLocal finishes a layer read from the store.
func (ll *LazyLayer) setLocal(ix *layers.Index, closeFn func() error) {
	if ll.Kind == "" {
		ll.Kind = KindLocal
	}
	ll.Index, ll.close = ix, closeFn
	ll.verified.Store(true)
}

// blobReader reads the one layer of an fs.Blobs.
type blobReader struct{ b *fs.Blobs }

func (r blobReader) ReadAt(p []byte, off int64) (int, error) { return r.b.ReadAt(0, p, off) }

func decompressToTemp(r io.Reader, dir string) (*os.File, error) {
	d, _, err := layers.Decompress(r)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	t, err := os.CreateTemp(dir, "lazy-*.tar")
	if err != nil {
		return nil, err
	}
	os.Remove(t.Name())
	if _, err := io.Copy(t, d); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// fetchWhole fetches the layers need of li whole through the pull path
// (verified, indexed, kept in the store) and opens them locally.
func (s *Store) fetchWhole(ctx context.Context, c *registryClient, li *LazyImage, need []int, prog io.Writer) error {
	sl, err := s.storeLock(ctx, false)
	if err != nil {
		return err
	}
	defer sl.Unlock()
	var ls []Layer
	for _, i := range need {
		ls = append(ls, li.Layers[i].Layer)
	}
	var p *progress
	if prog != nil {
		p = newProgress(prog, ls)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(DefaultJobs)
	for _, l := range ls {
		g.Go(func() error {
			_, err := s.fetchLayer(gctx, c, l, p)
			return err
		})
	}
	err = g.Wait()
	p.close()
	if err != nil {
		return err
	}
	for _, i := range need {
		ll := li.Layers[i]
		ll.Kind = KindFetched
		ok, err := s.openLocal(li.Image.Name, ll)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s: layer %s: fetched, but not found in the store", li.Image.Name, ll.Digest)
		}
	}
	return nil
}

// layer returns the lazy index of layer d (nil on a nil foundIndex).
func (fi *foundIndex) layer(d v1.Hash) *LazyIndex {
	if fi == nil {
		return nil
	}
	return fi.layers[d]
}

// treePath is where the merged tree of li's layer indexes is saved, named
// by where each index came from, all content-addressed: the store's own
// index of a local or fetched blob (the layer digest), the index artifact's
// entries for the layer (artifact and layer digests), the eStargz TOC (its
// verified digest). Merge is a function of the indexes alone, so the same
// name is the same tree. When every index is the store's own, that is the
// tree the FUSE rootfs of a pulled image saves (MergedTree). It is "" when
// a layer's source has no such name.
func (li *LazyImage) treePath() string {
	local := true
	for _, ll := range li.Layers {
		local = local && (ll.Kind == KindLocal || ll.Kind == KindFetched)
	}
	if local {
		return li.s.mergedPath(li.Image.Layers)
	}
	h := sha256.New()
	fmt.Fprintln(h, "dabba lazy merged tree 1")
	for _, ll := range li.Layers {
		switch {
		case ll.Kind == KindLocal || ll.Kind == KindFetched:
			fmt.Fprintln(h, ll.Kind, ll.Digest)
		case ll.Kind == KindIndexed && li.IndexArtifact.Hex != "":
			fmt.Fprintln(h, ll.Kind, ll.Digest, li.IndexArtifact)
		case ll.Kind == KindEStargz && ll.es != nil:
			fmt.Fprintln(h, ll.Kind, ll.Digest, ll.es.TOCDigest())
		default:
			return ""
		}
	}
	return li.s.lazyTreePath(hex.EncodeToString(h.Sum(nil)))
}

// CacheDir is the directory of the shared chunk cache of lazy reads.
func (s *Store) CacheDir() string { return filepath.Join(s.root, "cache") }

// Indexes returns the layers' indexes, bottom first, for layers.Merge.
func (li *LazyImage) Indexes() []*layers.Index {
	out := make([]*layers.Index, len(li.Layers))
	for i, ll := range li.Layers {
		out[i] = ll.Index
	}
	return out
}

// ReadAt reads layer number layer (Node.Layer) at off, an offset its index
// recorded: it has the shape of fs.LayerReader. Bytes are verified before
// they are returned (an error wrapping remote.ErrVerify otherwise). The
// file read is recorded for the next run's prefetch.
func (li *LazyImage) ReadAt(layer int, p []byte, off int64) (int, error) {
	if layer < 0 || layer >= len(li.Layers) {
		return 0, fmt.Errorf("%s: no layer %d of %d", li.Image.Name, layer, len(li.Layers))
	}
	ll := li.Layers[layer]
	if e := ll.bad.Load(); e != nil {
		return 0, *e
	}
	if li.recording {
		li.record(layer, ll, off, len(p))
	}
	n, err := ll.r.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return n, err
}

// LazyStats count the network traffic of a LazyImage.
type LazyStats struct {
	// Requests and BytesFetched are the range requests of lazy layers and
	// their body bytes.
	Requests, BytesFetched int64
	// IndexBytes were fetched for the index artifact (0 when pinned and
	// kept in the store).
	IndexBytes int64
	// WholeBytes are the compressed bytes of layers fetched whole.
	WholeBytes int64
	// Retries and RangeIgnored are as in remote.Stats, summed.
	Retries, RangeIgnored int64
}

// Stats returns the traffic so far.
func (li *LazyImage) Stats() LazyStats {
	st := LazyStats{IndexBytes: li.indexBytes, WholeBytes: li.wholeBytes}
	for _, ll := range li.Layers {
		for _, f := range []*remote.Fetcher{ll.f, ll.wf} {
			if f != nil {
				fs := f.Stats()
				st.Requests += fs.Requests
				st.BytesFetched += fs.BytesFetched
				st.Retries += fs.Retries
				st.RangeIgnored += fs.RangeIgnored
			}
		}
	}
	return st
}

// prefetchJobs bounds the files prefetched at once (each is fetched by its
// layer's Fetcher, which bounds its own connections).
const prefetchJobs = 8

// Prefetch fetches (and verifies, and caches) the contents of the regular
// files at paths of the merged tree, in parallel. Unknown paths are
// skipped.
func (li *LazyImage) Prefetch(ctx context.Context, paths []string) error {
	return li.prefetchFiles(ctx, paths, false)
}

// prefetchFiles is Prefetch, of eStargz layers' files only when esOnly.
func (li *LazyImage) prefetchFiles(ctx context.Context, paths []string, esOnly bool) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(prefetchJobs)
	for _, p := range paths {
		n := li.Tree.Lookup(p)
		if n == nil || n.Type != layers.TypeReg || n.Size == 0 || int(n.Layer) >= len(li.Layers) {
			continue
		}
		ll := li.Layers[n.Layer]
		off, size := n.Offset, n.Size
		switch {
		case ll.gz != nil && !esOnly:
			g.Go(func() error { return ll.gz.Prefetch(gctx, off, size) })
		case ll.es != nil:
			g.Go(func() error {
				buf := make([]byte, min(size, 1<<20))
				for at := off; at < off+size; at += int64(len(buf)) {
					b := buf[:min(int64(len(buf)), off+size-at)]
					if _, err := ll.es.ReadAtContext(gctx, b, at); err != nil && err != io.EOF {
						return err
					}
				}
				return nil
			})
		}
	}
	return g.Wait()
}

// startPrefetch prefetches at open: the ranges learnt from earlier runs
// here (else those of the index artifact's prefetch list), or for older
// records the files; the eStargz layers' landmark files only when no run
// here has recorded what it reads (the image's list is for a first run:
// what this machine's runs read supersedes it, as for the index's list).
func (li *LazyImage) startPrefetch() {
	defer close(li.prefetched)
	start := time.Now()
	before := li.Stats()
	var errs []error
	// Ranges for gzip layers; files for eStargz layers (their chunks
	// do not line up with the recorded blocks) and for older records.
	var g errgroup.Group
	if len(li.prefetch) > 0 {
		g.Go(func() error { return li.PrefetchRanges(li.ctx, li.prefetch) })
	}
	if len(li.learned) > 0 {
		g.Go(func() error { return li.prefetchFiles(li.ctx, li.learned, len(li.prefetch) > 0) })
	}
	if err := g.Wait(); err != nil {
		errs = append(errs, err)
	}
	for _, ll := range li.Layers {
		if ll.es != nil && len(li.learned) == 0 {
			if err := ll.es.Prefetch(li.ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	li.prefErr = errors.Join(errs...)
	if li.prefErr != nil && li.ctx.Err() == nil {
		slog.Warn("prefetch failed; files will be fetched when read", "stage", "lazy", "image", li.Image.Name, "err", li.prefErr)
	}
	after := li.Stats()
	var rangeBytes int64
	for _, r := range li.prefetch {
		rangeBytes += r.Length
	}
	slog.Debug("prefetch done", "stage", "lazy", "image", li.Image.Name, "ranges", len(li.prefetch), "range_bytes", rangeBytes, "from", li.prefetchFrom,
		"files", len(li.learned), "bytes", after.BytesFetched-before.BytesFetched, "requests", after.Requests-before.Requests,
		"took", time.Since(start).Round(time.Millisecond))
}

// Prefetch by ranges: the list is cut, in order, into pieces of at most
// prefetchPiece bytes of one layer's content, of which prefetchAhead are
// fetched at a time. Fetching all at once would share the link among all
// of them, and the first ranges (those the command reads first) would
// arrive last; this keeps the link busy (a piece is about 450 KB of gzip,
// more than a 100 Mbit/s link with a 20 ms round trip holds in flight)
// while the pieces arrive in the order they are needed.
const (
	prefetchFirstPiece = 128 << 10
	prefetchPiece      = 1 << 20
	prefetchAhead      = 4
)

// PrefetchRanges fetches (verifies and caches) the ranges rs of gzip
// layers read through an index, in the order given, a few pieces at a
// time (see prefetchPiece). Ranges of other layers are skipped.
func (li *LazyImage) PrefetchRanges(ctx context.Context, rs []learnedRange) error {
	byDigest := map[v1.Hash]*LazyLayer{}
	for _, ll := range li.Layers {
		if ll.gz != nil && byDigest[ll.Digest] == nil {
			byDigest[ll.Digest] = ll
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(prefetchAhead)
	var cur *LazyLayer
	var piece []remote.Range
	var size int64
	// The first pieces are small, so the first reads (the container's
	// init, the command's binary) wait for little; then they double.
	limit := int64(prefetchFirstPiece)
	flush := func() {
		if len(piece) > 0 {
			ll, p := cur, piece
			g.Go(func() error { return ll.gz.PrefetchRanges(gctx, p) })
		}
		piece, size = nil, 0
	}
	for _, r := range rs {
		ll := byDigest[r.Layer]
		if ll == nil {
			continue
		}
		if ll != cur || size+r.Length > limit {
			if len(piece) > 0 {
				limit = min(2*limit, prefetchPiece)
			}
			flush()
			cur = ll
		}
		piece = append(piece, remote.Range{Off: r.Offset, N: r.Length})
		size += r.Length
	}
	flush()
	return g.Wait()
}

// WaitPrefetch waits for the prefetch started at open and returns its
// error (a failed prefetch is not fatal: reads fetch what they need).
func (li *LazyImage) WaitPrefetch() error {
	<-li.prefetched
	return li.prefErr
}

// Learned returns the files the last runs recorded, which OpenLazy
// prefetches.
func (li *LazyImage) Learned() []string { return li.learned }

// Background fetch pacing: it starts backgroundDelay after the prefetch at
// open, and fetches backgroundBatch bytes at a time.
// Each batch waits until no request for the command's reads (nor the
// prefetch at open) has been in flight for backgroundQuiet, but at most
// backgroundMaxWait: a command that reads without pause (tar of the whole
// image) still lets the background fetch go on, a batch at a time, and
// the background fetch, which ends with the whole image local, is what
// makes such a command fast.
const (
	backgroundDelay   = time.Second
	backgroundBatch   = 1 << 20
	backgroundQuiet   = 50 * time.Millisecond
	backgroundMaxWait = 100 * time.Millisecond
)

// waitQuiet returns once the command's fetches have given way (see
// backgroundQuiet) or after backgroundMaxWait.
func (li *LazyImage) waitQuiet(ctx context.Context) error {
	deadline := time.Now().Add(backgroundMaxWait)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		idle := li.act.Idle()
		if idle >= backgroundQuiet || !time.Now().Before(deadline) {
			return nil
		}
		wait := min(max(backgroundQuiet-idle, 5*time.Millisecond), time.Until(deadline))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// StartBackground fetches the rest of the lazy layers into the cache, one
// layer at a time, after the prefetch at open and at low priority: a
// batch at a time, each waiting until the command has had no read in
// flight for a moment. It runs until done or Close. A failure is kept for
// WaitBackground; reads are unaffected.
func (li *LazyImage) StartBackground() {
	li.bg.Add(1)
	go func() {
		defer li.bg.Done()
		select {
		case <-li.prefetched:
		case <-li.ctx.Done():
			return
		}
		// The first moments of a command are when it reads most and
		// when its start is measured: the background fetch waits, and
		// leaves it the link and the CPU (hashing, inflating to check).
		t := time.NewTimer(backgroundDelay)
		select {
		case <-t.C:
		case <-li.ctx.Done():
			t.Stop()
			return
		}
		bctx := remote.Background(li.ctx)
		for _, ll := range li.Layers {
			var err error
			switch {
			case ll.gz != nil:
				err = ll.gz.PrefetchAllPaced(bctx, backgroundBatch, li.waitQuiet)
				if err == nil && !ll.Verified() {
					err = li.verifyIndexed(ll)
				}
			case ll.es != nil:
				err = ll.es.PrefetchAllPaced(bctx, backgroundBatch, li.waitQuiet)
			}
			if li.ctx.Err() != nil {
				return
			}
			if err != nil {
				err = fmt.Errorf("background fetch of %s layer %s: %w", li.Image.Name, ll.Digest, err)
				li.bgErr.Store(&err)
				slog.Warn("background fetch failed", "stage", "lazy", "err", err)
				return
			}
		}
		slog.Debug("background fetch done", "stage", "lazy", "image", li.Image.Name)
	}()
}

// verifyIndexed reads the whole layer ll (from the cache, after the
// background fetch) and checks the unpinned index it was read by: the
// uncompressed bytes must have the config's diff_id, and indexing them
// must give the artifact's entry table. A layer that fails is poisoned:
// every later read of it fails.
func (li *LazyImage) verifyIndexed(ll *LazyLayer) error {
	h := sha256.New()
	sr := io.NewSectionReader(ctxReaderAt{li.ctx, ll.gz}, 0, ll.gz.Size())
	r := io.TeeReader(bufio.NewReaderSize(sr, 1<<20), h)
	ix, err := layers.IndexLayer(r, ll.Digest.String())
	if err == nil {
		_, err = io.Copy(io.Discard, r)
	}
	if err != nil {
		if li.ctx.Err() != nil {
			return li.ctx.Err()
		}
		err = fmt.Errorf("layer %s: checking the index of %s against the whole layer: %w", ll.Digest, li.Image.Name, err)
		ll.bad.Store(&err)
		return err
	}
	var bad error
	if got := hex.EncodeToString(h.Sum(nil)); got != ll.DiffID.Hex {
		bad = fmt.Errorf("layer %s of %s: its uncompressed content has digest sha256:%s, the config says %s: index artifact %s does not describe this layer (%w); run `dabba pull` instead of --lazy, and push a new index with `dabba index push`",
			ll.Digest, li.Image.Name, got, ll.DiffID, li.IndexArtifact, ErrDigestMismatch)
	} else {
		a, err1 := ix.MarshalBinary()
		b, err2 := ll.Index.MarshalBinary()
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			bad = fmt.Errorf("layer %s of %s: index artifact %s lists other entries than the layer holds (%w); run `dabba pull` instead of --lazy, and push a new index with `dabba index push`",
				ll.Digest, li.Image.Name, li.IndexArtifact, ErrDigestMismatch)
		}
	}
	if bad != nil {
		ll.bad.Store(&bad)
		slog.Error("lazy index does not match the layer", "stage", "lazy", "err", bad)
		return bad
	}
	ll.verified.Store(true)
	slog.Debug("lazy layer verified against its diff_id", "stage", "lazy", "layer", ll.Digest.String())
	if err := li.s.noteLayerVerified(li.IndexArtifact, ll.Digest, ll.DiffID); err != nil {
		slog.Debug("verified layer not noted", "stage", "lazy", "layer", ll.Digest.String(), "err", err)
	}
	return nil
}

// verifiedPath is lazy/verified/<artifact hex>-<layer hex>, which records
// that the layer read through that index artifact has the diff_id the file
// holds and the artifact's entries (verifyIndexed): a fact about digests,
// so later runs trust the layer as a pinned one and their background fetch
// does not read it all again to check.
func (s *Store) verifiedPath(artifact, layer v1.Hash) string {
	return filepath.Join(s.root, "lazy", "verified", artifact.Hex+"-"+layer.Hex)
}

func (s *Store) layerVerified(artifact, layer, diffID v1.Hash) bool {
	if checkHash(artifact) != nil || checkHash(layer) != nil {
		return false
	}
	b, err := os.ReadFile(s.verifiedPath(artifact, layer))
	return err == nil && strings.TrimSpace(string(b)) == diffID.String()
}

func (s *Store) noteLayerVerified(artifact, layer, diffID v1.Hash) error {
	if checkHash(artifact) != nil || checkHash(layer) != nil {
		return fmt.Errorf("no artifact or layer digest")
	}
	p := s.verifiedPath(artifact, layer)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return s.writeFileAtomic(p, []byte(diffID.String()+"\n"))
}

// ctxReaderAt reads a GzipLayer with a context.
type ctxReaderAt struct {
	ctx context.Context
	gz  *remote.GzipLayer
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return c.gz.ReadAtContext(c.ctx, p, off)
}

// WaitBackground waits for the background fetch to end and returns its
// error.
func (li *LazyImage) WaitBackground() error {
	li.bg.Wait()
	if e := li.bgErr.Load(); e != nil {
		return *e
	}
	return nil
}

// Close stops the prefetch and the background fetch, saves the files this
// run read for the next run's prefetch, and releases the layers.
func (li *LazyImage) Close() error {
	var err error
	li.closeOnce.Do(func() {
		li.cancel()
		li.bg.Wait()
		<-li.prefetched
		err = li.saveLearned()
		li.closeLayers()
	})
	return err
}

func (li *LazyImage) closeLayers() {
	for _, ll := range li.Layers {
		if ll.close != nil {
			ll.close()
			ll.close = nil
		}
	}
}

// regularByOffset lists the regular files of ix by content offset.
func regularByOffset(ix *layers.Index) []int {
	var out []int
	for i, e := range ix.Entries {
		if e.Type == layers.TypeReg && e.Size > 0 {
			out = append(out, i)
		}
	}
	sort.SliceStable(out, func(a, b int) bool { return ix.Entries[out[a]].Offset < ix.Entries[out[b]].Offset })
	return out
}
