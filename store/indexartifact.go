package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/gzran"
	"github.com/dabba/dabba/layers/remote"
)

// The dabba index artifact: an OCI image manifest whose subject is the
// image's (platform) manifest, with one blob per indexed layer.
const (
	// IndexArtifactType is the artifactType (and config media type) of a
	// dabba index artifact.
	IndexArtifactType = "application/vnd.dabba.index.v1"
	// IndexLayerMediaType is the media type of one layer's index blob
	// (LazyIndex in binary form).
	IndexLayerMediaType = "application/vnd.dabba.index.layer.v1"
	// IndexLayerAnnotation, on an index blob's descriptor, names the layer
	// digest the blob indexes.
	IndexLayerAnnotation = "dev.dabba.index.layer"
	// IndexWindowsMediaType is the media type of one layer's windows blob:
	// the 32 KiB of history at every gzip checkpoint, compressed, one
	// after the other (remote.BuildWindows). It is not fetched whole: a
	// lazy read fetches by range the one window its checkpoint needs.
	IndexWindowsMediaType = "application/vnd.dabba.index.windows.v1"
	// IndexPrefetchMediaType is the media type of the artifact's prefetch
	// list (JSON, prefetchList): the ranges of the layers that lazy runs
	// of the image read at start, in order, learned on the machine that
	// pushed the index. A cold lazy run fetches them at once, in
	// parallel, as eStargz's prefetch landmark does.
	IndexPrefetchMediaType = "application/vnd.dabba.index.prefetch.v1+json"
	// IndexSpan is the checkpoint spacing (uncompressed bytes) of the gzip
	// indexes `dabba index push` builds: a cold read inflates from at most
	// 256 KiB before its offset, about 110 KiB of compressed bytes for
	// typical layers (the pull's 4 MiB suits local reads, not reads over
	// a network). The windows, 32 KiB per checkpoint before compression,
	// travel in a blob of their own, fetched a window at a time, so the
	// index a lazy run fetches whole stays small (entries, and 40 bytes
	// per checkpoint and per span).
	IndexSpan = 256 << 10
	// maxIndexBlob bounds one index blob fetched from a registry, and its
	// decompressed content.
	maxIndexBlob = 1 << 30
	// maxPrefetchList bounds the prefetch list blob.
	maxPrefetchList = 16 << 20
)

// createdAnnotation is the OCI annotation of an artifact's creation time.
const createdAnnotation = "org.opencontainers.image.created"

// emptyConfig is the OCI empty descriptor's content.
var emptyConfig = []byte("{}")

// ErrNoIndex reports an image without a usable dabba index artifact.
var ErrNoIndex = errors.New("store: no dabba index for the image")

// LazyIndex is what reading one gzip layer lazily needs: its entries with
// their offsets in the uncompressed tar, the gzip checkpoints, a digest per
// span of compressed bytes, and where the checkpoints' windows are. One is
// one blob of the index artifact (plus the windows blob).
type LazyIndex struct {
	Entries *layers.Index
	// Checkpoints is detached from its windows (version 2); version 1
	// blobs hold the windows inline.
	Checkpoints *gzran.Index
	Spans       *remote.SpanIndex
	// Windows locates each checkpoint's window in the windows blob (nil
	// in version 1).
	Windows *remote.SpanIndex

	// windowsBlob is the windows blob BuildLazyIndex made, to push.
	windowsBlob []byte
}

// Serialised LazyIndex:
//
//	magic "DBBAIDX" version(1 byte)
//	version 1: 3 × (uvarint length, bytes): the layers.Index, the
//	gzran.Index (with windows) and the remote.SpanIndex, each in its own
//	binary form (each with its own version and checksum)
//	version 2: a zstd frame holding 4 × (uvarint length, bytes): the
//	layers.Index, the detached gzran.Index, the layer's SpanIndex and the
//	SpanIndex of the windows blob
const (
	lazyIndexMagic   = "DBBAIDX"
	lazyIndexVersion = 2
)

// MarshalBinary implements encoding.BinaryMarshaler (version 2 for a
// detached index, version 1 for one with its windows).
func (x *LazyIndex) MarshalBinary() ([]byte, error) {
	var parts [][]byte
	enc := func(what string, m interface{ MarshalBinary() ([]byte, error) }) error {
		b, err := m.MarshalBinary()
		if err != nil {
			return fmt.Errorf("encoding %s: %w", what, err)
		}
		parts = append(parts, b)
		return nil
	}
	if err := enc("entry index", x.Entries); err != nil {
		return nil, err
	}
	if err := enc("gzip checkpoints", x.Checkpoints); err != nil {
		return nil, err
	}
	if err := enc("span index", x.Spans); err != nil {
		return nil, err
	}
	version := byte(1)
	if x.Checkpoints.Detached() {
		if x.Windows == nil {
			return nil, errors.New("encoding lazy index: detached gzip checkpoints without their windows")
		}
		if err := enc("window index", x.Windows); err != nil {
			return nil, err
		}
		version = 2
	}
	var body []byte
	for _, p := range parts {
		body = binary.AppendUvarint(body, uint64(len(p)))
		body = append(body, p...)
	}
	b := append([]byte(lazyIndexMagic), version)
	if version == 1 {
		return append(b, body...), nil
	}
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer zw.Close()
	return zw.EncodeAll(body, b), nil
}

// UnmarshalBinary implements encoding.BinaryUnmarshaler (versions 1 and 2).
func (x *LazyIndex) UnmarshalBinary(b []byte) error {
	if len(b) < len(lazyIndexMagic)+1 || string(b[:len(lazyIndexMagic)]) != lazyIndexMagic {
		return errors.New("not a dabba layer index")
	}
	v := b[len(lazyIndexMagic)]
	b = b[len(lazyIndexMagic)+1:]
	nparts := 3
	switch v {
	case 1:
	case 2:
		nparts = 4
		zr, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxIndexBlob), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer zr.Close()
		if b, err = zr.DecodeAll(b, nil); err != nil {
			return fmt.Errorf("dabba layer index is damaged: %w", err)
		}
	default:
		return fmt.Errorf("dabba layer index version %d, this dabba reads 1 and %d: push the index again with this dabba (`dabba index push IMAGE`)", v, lazyIndexVersion)
	}
	parts := make([][]byte, nparts)
	for i := range parts {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return errors.New("dabba layer index is truncated")
		}
		parts[i], b = b[k:k+int(n)], b[k+int(n):]
	}
	if len(b) != 0 {
		return errors.New("dabba layer index has trailing bytes")
	}
	out := LazyIndex{Entries: &layers.Index{}, Checkpoints: &gzran.Index{}, Spans: &remote.SpanIndex{}}
	if err := out.Entries.UnmarshalBinary(parts[0]); err != nil {
		return fmt.Errorf("entry index: %w", err)
	}
	if err := out.Checkpoints.UnmarshalBinary(parts[1]); err != nil {
		return fmt.Errorf("gzip checkpoints: %w", err)
	}
	if err := out.Spans.UnmarshalBinary(parts[2]); err != nil {
		return fmt.Errorf("span index: %w", err)
	}
	if nparts == 4 {
		out.Windows = &remote.SpanIndex{}
		if err := out.Windows.UnmarshalBinary(parts[3]); err != nil {
			return fmt.Errorf("window index: %w", err)
		}
	}
	if out.Checkpoints.Detached() != (out.Windows != nil) {
		return errors.New("dabba layer index: gzip checkpoints and windows disagree (version mix-up)")
	}
	*x = out
	return nil
}

// check reports whether the index is consistent with layer l: sizes agree
// with the blob's and with each other, every file lies inside the tar. It
// cannot tell whether the entries are the layer's (see OpenLazy's trust
// notes).
func (x *LazyIndex) check(l Layer) error {
	if x.Entries.Layer != l.Digest.String() {
		return fmt.Errorf("its entry index is of layer %q", x.Entries.Layer)
	}
	if x.Spans.Size != l.Size || x.Checkpoints.CompressedSize() != l.Size {
		return fmt.Errorf("the layer has %d bytes, the span index says %d, the gzip index %d", l.Size, x.Spans.Size, x.Checkpoints.CompressedSize())
	}
	if err := x.Spans.Check(); err != nil {
		return err
	}
	if x.Windows != nil {
		if err := x.Windows.Check(); err != nil {
			return fmt.Errorf("windows: %w", err)
		}
		if len(x.Windows.Spans) != len(x.Checkpoints.Checkpoints()) {
			return fmt.Errorf("%d windows for %d gzip checkpoints", len(x.Windows.Spans), len(x.Checkpoints.Checkpoints()))
		}
	}
	if x.Entries.TarSize != x.Checkpoints.UncompressedSize() {
		return fmt.Errorf("the entry index has a %d-byte tar, the gzip index %d bytes", x.Entries.TarSize, x.Checkpoints.UncompressedSize())
	}
	for _, e := range x.Entries.Entries {
		if e.Type == layers.TypeReg && (e.Offset < 0 || e.Size < 0 || e.Offset > x.Entries.TarSize-e.Size) {
			return fmt.Errorf("entry %q (%d bytes at %d) lies outside the %d-byte tar", e.Path, e.Size, e.Offset, x.Entries.TarSize)
		}
	}
	return nil
}

// BuildLazyIndex builds the lazy index of a gzip layer from its verified
// blob in the store (after a pull): checkpoints every IndexSpan, detached
// from their windows (laid out in a windows blob, pushed beside it), span
// digests, and the entry index the pull made.
func (s *Store) BuildLazyIndex(l Layer) (*LazyIndex, error) {
	return s.buildLazyIndex(l, nil)
}

// buildLazyIndex is BuildLazyIndex for a layer of which a prefetch list
// names ranges: each gets a gzip checkpoint right before it and a span
// ending right after it, so prefetching it fetches little more than it.
func (s *Store) buildLazyIndex(l Layer, rs []learnedRange) (*LazyIndex, error) {
	var at, lengths []int64
	for _, r := range rs {
		at, lengths = append(at, r.Offset), append(lengths, r.Length)
	}
	ix, err := s.LayerIndex(l.Digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(s.BlobPath(l.Digest))
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w (pull the image again)", l.Digest, err)
	}
	defer f.Close()
	gz, err := gzran.BuildIndexAt(bufio.NewReaderSize(io.NewSectionReader(f, 0, l.Size), 256<<10), IndexSpan, at)
	if err != nil {
		return nil, fmt.Errorf("layer %s: indexing gzip stream: %w", l.Digest, err)
	}
	var cuts []int64
	for i, off := range at {
		_, cend := gz.CompressedSpan(off, lengths[i])
		cuts = append(cuts, cend)
	}
	spans, err := remote.BuildSpansCut(f, l.Size, gz, cuts)
	if err != nil {
		return nil, fmt.Errorf("layer %s: digesting spans: %w", l.Digest, err)
	}
	wblob, windows, err := remote.BuildWindows(gz)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	x := &LazyIndex{Entries: ix, Checkpoints: gz.Detach(), Spans: &remote.SpanIndex{Size: l.Size, Spans: spans}, Windows: windows, windowsBlob: wblob}
	if err := x.check(l); err != nil {
		return nil, fmt.Errorf("layer %s: built index is inconsistent: %w", l.Digest, err)
	}
	return x, nil
}

// IndexPushOptions configure PushIndex.
type IndexPushOptions struct {
	// Platform, Insecure and Progress are as for Pull (the image is pulled
	// first, if not in the store).
	Platform *v1.Platform
	Insecure bool
	Progress io.Writer
	// NoPrefetch leaves out the prefetch list (the ranges earlier lazy
	// runs of the image in this store read at start).
	NoPrefetch bool
}

// IndexPushResult says what PushIndex did.
type IndexPushResult struct {
	Image *Image
	// Artifact is the digest of the index artifact's manifest, pinned in
	// the store for the image's manifest.
	Artifact v1.Hash
	// Indexed are the layers the artifact covers; Skipped the others, with
	// why (eStargz layers need no index; zstd and plain tar are not
	// indexed).
	Indexed []v1.Hash
	Skipped []SkippedLayer
	// PrefetchRanges and PrefetchBytes describe the prefetch list
	// published (learned from earlier lazy runs in this store; 0 when
	// none).
	PrefetchRanges int
	PrefetchBytes  int64
}

// SkippedLayer is a layer PushIndex did not index.
type SkippedLayer struct {
	Digest v1.Hash
	Reason string
}

// PushIndex makes ref's gzip layers readable lazily without changing the
// image: it pulls the image (if needed), builds each gzip layer's
// LazyIndex from the verified blob, and pushes them as one OCI artifact
// whose subject is the image's manifest (the referrers API, or the
// sha256-<hex> tag of the OCI tag schema on registries without it). The
// artifact's digest is recorded in the store, so later lazy runs of the
// image on this machine use exactly this index.
func (s *Store) PushIndex(ctx context.Context, ref string, opts IndexPushOptions) (*IndexPushResult, error) {
	r, err := ParseReference(ref, opts.Insecure)
	if err != nil {
		return nil, err
	}
	img, err := s.Pull(ctx, ref, PullOptions{Platform: opts.Platform, Insecure: opts.Insecure, Progress: opts.Progress, Quiet: opts.Progress == nil})
	if err != nil {
		return nil, err
	}
	raw, err := s.RawManifest(img)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: parsing manifest %s: %w", img.Name, img.ManifestDigest, err)
	}
	res := &IndexPushResult{Image: img}
	var blobs []indexBlob
	// The prefetch list: what earlier lazy runs here read. Each of its
	// ranges also gets a gzip checkpoint right before it, so a prefetch
	// fetches little more than the range.
	var learned []learnedRange
	byLayer := map[v1.Hash][]learnedRange{}
	if !opts.NoPrefetch {
		learned = coalesce(s.readLearnedRanges(img.ManifestDigest), coalesceGap)
		for _, r := range learned {
			byLayer[r.Layer] = append(byLayer[r.Layer], r)
		}
	}
	seen := map[v1.Hash]bool{}
	for i, l := range img.Layers {
		if seen[l.Digest] {
			continue
		}
		seen[l.Digest] = true
		if m.Layers[i].Annotations[remote.TOCDigestAnnotation] != "" {
			res.Skipped = append(res.Skipped, SkippedLayer{l.Digest, "eStargz: lazy without an index"})
			continue
		}
		c, err := s.blobCompression(l.Digest)
		if err != nil {
			return nil, err
		}
		if c != layers.Gzip {
			res.Skipped = append(res.Skipped, SkippedLayer{l.Digest, c.String() + " layers are not indexed; they are fetched whole"})
			continue
		}
		x, err := s.buildLazyIndex(l, byLayer[l.Digest])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", img.Name, err)
		}
		b, err := x.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("%s: layer %s: %w", img.Name, l.Digest, err)
		}
		blobs = append(blobs, indexBlob{b: b, d: contentDigest(b), layer: l.Digest})
		if x.windowsBlob != nil {
			blobs = append(blobs, indexBlob{b: x.windowsBlob, d: contentDigest(x.windowsBlob), layer: l.Digest, mt: IndexWindowsMediaType})
		}
		res.Indexed = append(res.Indexed, l.Digest)
		slog.Debug("layer indexed", "stage", "index", "layer", l.Digest.String(), "bytes", len(b), "checkpoints", len(x.Checkpoints.Checkpoints()), "spans", len(x.Spans.Spans))
	}
	if len(blobs) == 0 {
		return res, fmt.Errorf("%s: no layer to index (every layer is eStargz, zstd or plain tar): nothing pushed", img.Name)
	}

	if len(learned) > 0 {
		b, err := json.Marshal(prefetchList{Ranges: learned, Files: s.readLearned(img.ManifestDigest)})
		if err != nil {
			return nil, err
		}
		blobs = append(blobs, indexBlob{b: b, d: contentDigest(b), mt: IndexPrefetchMediaType})
		res.PrefetchRanges = len(learned)
		for _, r := range learned {
			res.PrefetchBytes += r.Length
		}
	}

	subject := v1.Descriptor{MediaType: m.MediaType, Digest: img.ManifestDigest, Size: int64(len(raw))}
	if subject.MediaType == "" {
		subject.MediaType = types.OCIManifestSchema1
	}
	if res.Artifact, err = s.pushArtifact(ctx, r.Context(), opts.Insecure, img.Name, subject, blobs); err != nil {
		return nil, err
	}
	if err := s.pinIndex(img.ManifestDigest, res.Artifact); err != nil {
		return nil, err
	}
	return res, nil
}

// indexBlob is one layer's LazyIndex in binary form, for the artifact.
type indexBlob struct {
	b     []byte
	d     v1.Hash
	layer v1.Hash         // the layer it indexes (zero for the prefetch list)
	mt    types.MediaType // IndexLayerMediaType when empty
}

func (b indexBlob) mediaType() types.MediaType {
	if b.mt == "" {
		return IndexLayerMediaType
	}
	return b.mt
}

// pushArtifact pushes the index artifact of subject with blobs to repo,
// keeps it in the store (blobs/) and returns its digest.
func (s *Store) pushArtifact(ctx context.Context, repo name.Repository, insecure bool, image string, subject v1.Descriptor, blobs []indexBlob) (v1.Hash, error) {
	art := artifactManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  IndexArtifactType,
		Config:        v1.Descriptor{MediaType: IndexArtifactType, Digest: contentDigest(emptyConfig), Size: int64(len(emptyConfig))},
		Subject:       &subject,
	}
	for _, b := range blobs {
		if b.mt == IndexPrefetchMediaType {
			// The newest artifact with a prefetch list wins when an
			// image has several (the list learned again, or pushed
			// from another machine); referrers lists carry the
			// manifest's annotations. An index without a list has no
			// time, so pushing it again gives the same artifact.
			art.Annotations = map[string]string{createdAnnotation: time.Now().UTC().Format(time.RFC3339Nano)}
		}
	}
	for _, b := range blobs {
		d := v1.Descriptor{MediaType: b.mediaType(), Digest: b.d, Size: int64(len(b.b))}
		if b.layer != (v1.Hash{}) {
			d.Annotations = map[string]string{IndexLayerAnnotation: b.layer.String()}
		}
		art.Layers = append(art.Layers, d)
	}
	mb, err := json.Marshal(art)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: encoding index artifact: %w", image, err)
	}
	ad := contentDigest(mb)
	ropts := []ggcrremote.Option{
		ggcrremote.WithContext(ctx),
		ggcrremote.WithAuthFromKeychain(authn.DefaultKeychain),
		ggcrremote.WithTransport(newBaseTransport(insecure)),
	}
	push := func(b []byte, mt types.MediaType) error {
		if err := ggcrremote.WriteLayer(repo, static.NewLayer(b, mt), ropts...); err != nil {
			return pushError(image, repo.RegistryStr(), err)
		}
		return nil
	}
	if err := push(emptyConfig, IndexArtifactType); err != nil {
		return v1.Hash{}, err
	}
	pushed := map[v1.Hash]bool{}
	for _, b := range blobs {
		if pushed[b.d] {
			continue
		}
		pushed[b.d] = true
		if err := push(b.b, b.mediaType()); err != nil {
			return v1.Hash{}, err
		}
	}
	if err := ggcrremote.Put(repo.Digest(ad.String()), rawManifest{mb, types.OCIManifestSchema1}, ropts...); err != nil {
		return v1.Hash{}, pushError(image, repo.RegistryStr(), err)
	}
	slog.Debug("index artifact pushed", "stage", "index", "image", image, "artifact", ad.String())
	// Keep what was pushed: the next lazy run needs no network for it.
	if err := s.putBlob(ctx, ad, mb); err != nil {
		return v1.Hash{}, err
	}
	for _, b := range blobs {
		if err := s.putBlob(ctx, b.d, b.b); err != nil {
			return v1.Hash{}, err
		}
	}
	return ad, nil
}

func pushError(image, registry string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("pushing the index of %s: %s refused (%v); log in with push rights (podman login or docker login)", image, registry, briefError(te))
	}
	return fmt.Errorf("pushing the index of %s to %s: %w", image, registry, err)
}

// artifactManifest is an OCI 1.1 image manifest used as an artifact.
type artifactManifest struct {
	SchemaVersion int64             `json:"schemaVersion"`
	MediaType     types.MediaType   `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        v1.Descriptor     `json:"config"`
	Layers        []v1.Descriptor   `json:"layers"`
	Subject       *v1.Descriptor    `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// rawManifest is a remote.Taggable of manifest bytes.
type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

func contentDigest(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// blobCompression reads the magic bytes of a stored blob.
func (s *Store) blobCompression(h v1.Hash) (layers.Compression, error) {
	f, err := os.Open(s.BlobPath(h))
	if err != nil {
		return 0, fmt.Errorf("layer %s: %w", h, err)
	}
	defer f.Close()
	var b [4]byte
	n, err := io.ReadFull(f, b[:])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return 0, fmt.Errorf("layer %s: %w", h, err)
	}
	return layers.DetectCompression(b[:n]), nil
}

// Pins: lazy/pins/<manifest-hex> holds the digest of the index artifact
// PushIndex pushed for that manifest.
func (s *Store) pinPath(manifest v1.Hash) string {
	return filepath.Join(s.root, "lazy", "pins", manifest.Hex)
}

func (s *Store) pinIndex(manifest, artifact v1.Hash) error {
	if err := os.MkdirAll(filepath.Dir(s.pinPath(manifest)), 0o700); err != nil {
		return fmt.Errorf("pinning index of %s: %w", manifest, err)
	}
	return s.writeFileAtomic(s.pinPath(manifest), []byte(artifact.String()+"\n"))
}

// PinnedIndex returns the index artifact pinned for an image manifest
// (by PushIndex on this machine), if any.
func (s *Store) PinnedIndex(manifest v1.Hash) (v1.Hash, bool) {
	b, err := os.ReadFile(s.pinPath(manifest))
	if err != nil {
		return v1.Hash{}, false
	}
	h, err := v1.NewHash(strings.TrimSpace(string(b)))
	if err != nil || checkHash(h) != nil {
		return v1.Hash{}, false
	}
	return h, true
}

// Found artifacts: lazy/found/<manifest-hex> holds the digest of the index
// artifact a lazy run found through the referrers API for that manifest.
func (s *Store) foundPath(manifest v1.Hash) string {
	return filepath.Join(s.root, "lazy", "found", manifest.Hex)
}

func (s *Store) noteFoundIndex(manifest, artifact v1.Hash) error {
	if err := os.MkdirAll(filepath.Dir(s.foundPath(manifest)), 0o700); err != nil {
		return err
	}
	return s.writeFileAtomic(s.foundPath(manifest), []byte(artifact.String()+"\n"))
}

func (s *Store) foundIndex(manifest v1.Hash) (v1.Hash, bool) {
	b, err := os.ReadFile(s.foundPath(manifest))
	if err != nil {
		return v1.Hash{}, false
	}
	h, err := v1.NewHash(strings.TrimSpace(string(b)))
	if err != nil || checkHash(h) != nil || !s.hasBlob(h, -1) {
		return v1.Hash{}, false
	}
	return h, true
}

// foundIndex is an index artifact found for an image, with its per-layer
// indexes (checked against the layers).
type foundIndex struct {
	artifact v1.Hash
	pinned   bool
	layers   map[v1.Hash]*LazyIndex
	windows  map[v1.Hash]v1.Descriptor // layer -> its windows blob
	prefetch []learnedRange            // the artifact's prefetch list
	fetched  int64                     // bytes of manifests and blobs fetched for it
}

// findIndex finds the dabba index artifact of manifest md: the pinned one,
// else through the referrers API (or its tag fallback). It returns nil
// without error when there is none.
func (s *Store) findIndex(ctx context.Context, c *registryClient, md v1.Hash, ls []Layer, requirePinned bool) (*foundIndex, error) {
	if a, ok := s.PinnedIndex(md); ok {
		fi, err := s.loadIndex(ctx, c, md, a, ls)
		if err == nil {
			fi.pinned = true
			return fi, nil
		}
		slog.Warn("pinned index artifact unusable; looking for another", "stage", "lazy", "artifact", a.String(), "err", err)
	}
	if requirePinned {
		return nil, nil
	}
	// The artifact an earlier lazy run here found: kept in the store, it
	// is not looked for again (`dabba gc` forgets it with its blobs).
	if a, ok := s.foundIndex(md); ok {
		if fi, err := s.loadIndex(ctx, c, md, a, ls); err == nil {
			return fi, nil
		}
	}
	cands, n, err := c.referrers(ctx, md)
	if err != nil {
		return nil, err
	}
	// Newest first (RFC 3339 times in UTC sort as strings; only those
	// with a prefetch list have one); those without a time last, in the
	// registry's order.
	sort.SliceStable(cands, func(i, j int) bool {
		return cands[i].Annotations[createdAnnotation] > cands[j].Annotations[createdAnnotation]
	})
	var errs []error
	for _, d := range cands {
		if d.ArtifactType != IndexArtifactType {
			continue
		}
		fi, err := s.loadIndex(ctx, c, md, d.Digest, ls)
		if err != nil {
			errs = append(errs, err)
			slog.Warn("index artifact unusable", "stage", "lazy", "artifact", d.Digest.String(), "err", err)
			continue
		}
		fi.fetched += n
		if err := s.noteFoundIndex(md, d.Digest); err != nil {
			slog.Debug("index artifact not noted", "stage", "lazy", "err", err)
		}
		return fi, nil
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %w: %w", c.image, ErrNoIndex, errors.Join(errs...))
	}
	return nil, nil
}

// loadIndex reads and checks index artifact a of manifest md.
func (s *Store) loadIndex(ctx context.Context, c *registryClient, md, a v1.Hash, ls []Layer) (*foundIndex, error) {
	if err := checkHash(a); err != nil {
		return nil, err
	}
	fi := &foundIndex{artifact: a, layers: map[v1.Hash]*LazyIndex{}}
	var b []byte
	if s.hasBlob(a, -1) {
		var err error
		if b, err = s.readBlob(a); err == nil && contentDigest(b) != a {
			err = fmt.Errorf("stored index artifact %s does not match its digest", a)
		}
		if err != nil {
			return nil, err
		}
	} else {
		var err error
		if b, _, _, err = c.manifest(ctx, a.String()); err != nil {
			return nil, fmt.Errorf("index artifact %s: %w", a, err)
		}
		fi.fetched += int64(len(b))
	}
	var m artifactManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("index artifact %s: %w", a, err)
	}
	if m.ArtifactType != IndexArtifactType && m.Config.MediaType != IndexArtifactType {
		return nil, fmt.Errorf("index artifact %s has artifact type %q, not %s", a, m.ArtifactType, IndexArtifactType)
	}
	if m.Subject == nil || m.Subject.Digest != md {
		return nil, fmt.Errorf("index artifact %s does not refer to manifest %s", a, md)
	}
	want := map[v1.Hash]Layer{}
	for _, l := range ls {
		want[l.Digest] = l
	}
	// The layers' index blobs and the prefetch list, fetched in parallel;
	// the windows blobs are only located (reads fetch a window at a time).
	type job struct {
		d     v1.Descriptor
		layer Layer
	}
	var jobs []job
	queued := map[v1.Hash]bool{}
	var prefetchDesc *v1.Descriptor
	fi.windows = map[v1.Hash]v1.Descriptor{}
	for _, d := range m.Layers {
		if d.MediaType == IndexPrefetchMediaType && prefetchDesc == nil {
			if err := checkHash(d.Digest); err != nil || d.Size < 0 || d.Size > maxPrefetchList {
				return nil, fmt.Errorf("index artifact %s: prefetch list %s of %d bytes: refusing it", a, d.Digest, d.Size)
			}
			prefetchDesc = &d
			continue
		}
		if d.MediaType != IndexLayerMediaType && d.MediaType != IndexWindowsMediaType {
			continue
		}
		lh, err := v1.NewHash(d.Annotations[IndexLayerAnnotation])
		if err != nil {
			return nil, fmt.Errorf("index artifact %s: blob %s names no layer (annotation %s)", a, d.Digest, IndexLayerAnnotation)
		}
		l, ok := want[lh]
		if !ok {
			continue // another image's layer
		}
		if err := checkHash(d.Digest); err != nil {
			return nil, fmt.Errorf("index artifact %s: %w", a, err)
		}
		if d.Size < 0 || d.Size > maxIndexBlob {
			return nil, fmt.Errorf("index artifact %s: index of layer %s has size %d: refusing it", a, lh, d.Size)
		}
		if d.MediaType == IndexWindowsMediaType {
			if _, dup := fi.windows[lh]; !dup {
				fi.windows[lh] = d
			}
			continue
		}
		if !queued[lh] {
			queued[lh] = true
			jobs = append(jobs, job{d, l})
		}
	}
	results := make([]*LazyIndex, len(jobs))
	var fetched atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for i, j := range jobs {
		g.Go(func() error {
			lh := j.layer.Digest
			bb, n, err := s.indexBlob(gctx, c, j.d.Digest, j.d.Size)
			fetched.Add(n)
			if err != nil {
				return fmt.Errorf("index artifact %s: index of layer %s: %w", a, lh, err)
			}
			var x LazyIndex
			if err := x.UnmarshalBinary(bb); err != nil {
				return fmt.Errorf("index artifact %s: index of layer %s: %w", a, lh, err)
			}
			if err := x.check(j.layer); err != nil {
				return fmt.Errorf("index artifact %s: index of layer %s does not fit the layer: %w", a, lh, err)
			}
			if x.Windows != nil {
				wd, ok := fi.windows[lh]
				if !ok {
					return fmt.Errorf("index artifact %s: index of layer %s has no windows blob (%s)", a, lh, IndexWindowsMediaType)
				}
				if wd.Size != x.Windows.Size {
					return fmt.Errorf("index artifact %s: windows blob of layer %s has %d bytes, its index says %d", a, lh, wd.Size, x.Windows.Size)
				}
			}
			results[i] = &x
			return nil
		})
	}
	if prefetchDesc != nil {
		g.Go(func() error {
			bb, n, err := s.indexBlob(gctx, c, prefetchDesc.Digest, prefetchDesc.Size)
			fetched.Add(n)
			var pl prefetchList
			if err == nil {
				err = json.Unmarshal(bb, &pl)
			}
			if err == nil {
				err = pl.check()
			}
			if err != nil {
				// A bad prefetch list costs speed, not the run.
				slog.Warn("prefetch list of the index unusable", "stage", "lazy", "artifact", a.String(), "err", err)
				return nil
			}
			fi.prefetch = pl.Ranges
			return nil
		})
	}
	err := g.Wait()
	fi.fetched += fetched.Load()
	if err != nil {
		return nil, err
	}
	for i, j := range jobs {
		fi.layers[j.layer.Digest] = results[i]
	}
	if s.hasBlob(a, int64(len(b))) || s.putBlob(ctx, a, b) == nil {
		slog.Debug("index artifact loaded", "stage", "lazy", "artifact", a.String(), "layers", len(fi.layers))
	}
	return fi, nil
}

// indexBlob returns a verified index blob, from the store or the registry
// (then kept in the store), and the bytes fetched.
func (s *Store) indexBlob(ctx context.Context, c *registryClient, h v1.Hash, size int64) ([]byte, int64, error) {
	if s.hasBlob(h, size) {
		b, err := s.readBlob(h)
		if err == nil && contentDigest(b) == h {
			return b, 0, nil
		}
	}
	resp, err := c.blob(ctx, h, 0, 0)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, size+1))
	if err != nil {
		return nil, int64(len(b)), remoteError(c.image, c.repo.RegistryStr(), h.String(), err)
	}
	if int64(len(b)) != size || contentDigest(b) != h {
		return nil, int64(len(b)), fmt.Errorf("blob %s: registry sent %d bytes with digest %s: %w", h, len(b), contentDigest(b), ErrDigestMismatch)
	}
	if err := s.putBlob(ctx, h, b); err != nil {
		slog.Debug("index blob not kept", "stage", "lazy", "blob", h.String(), "err", err)
	}
	return b, int64(len(b)), nil
}

// referrers lists the manifests referring to md: the referrers API, or
// the OCI tag schema's sha256-<hex> tag on registries without it. It also
// returns the bytes fetched.
func (c *registryClient) referrers(ctx context.Context, md v1.Hash) ([]v1.Descriptor, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("referrers", md.String()), nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", string(types.OCIImageIndex))
	// The tag schema's manifest is asked for at the same time: on a
	// registry without the API it saves a round trip.
	type tagResult struct {
		b   []byte
		err error
	}
	tag := md.Algorithm + "-" + md.Hex
	tctx, cancelTag := context.WithCancel(ctx)
	defer cancelTag()
	tagc := make(chan tagResult, 1)
	go func() {
		b, _, _, err := c.manifest(tctx, tag)
		tagc <- tagResult{b, err}
	}()
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, 0, remoteError(c.image, c.repo.RegistryStr(), "", err)
	}
	defer resp.Body.Close()
	var b []byte
	ct := resp.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = strings.TrimSpace(ct[:i])
	}
	if resp.StatusCode == http.StatusOK && ct == string(types.OCIImageIndex) {
		cancelTag()
		if b, err = io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1)); err != nil {
			return nil, int64(len(b)), remoteError(c.image, c.repo.RegistryStr(), "", err)
		}
		if len(b) > maxManifestSize {
			return nil, int64(len(b)), fmt.Errorf("%s: referrers list is larger than %d bytes: refusing it", c.image, maxManifestSize)
		}
	} else {
		switch resp.StatusCode {
		case http.StatusOK, http.StatusNotFound, http.StatusBadRequest, http.StatusNotAcceptable, http.StatusMethodNotAllowed:
		default:
			return nil, 0, remoteError(c.image, c.repo.RegistryStr(), "", transport.CheckError(resp, http.StatusOK))
		}
		// No referrers API: the tag schema.
		var tr tagResult
		select {
		case tr = <-tagc:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		if errors.Is(tr.err, ErrRemoteNotFound) {
			return nil, 0, nil
		}
		if tr.err != nil {
			return nil, 0, fmt.Errorf("referrers of %s (tag %s): %w", md, tag, tr.err)
		}
		b = tr.b
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, int64(len(b)), fmt.Errorf("%s: referrers of %s: %w", c.image, md, err)
	}
	return idx.Manifests, int64(len(b)), nil
}
