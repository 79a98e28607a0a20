package store

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// PullOptions configure Pull.
type PullOptions struct {
	// Platform chooses the manifest of a multi-arch index; nil: the host's
	// (linux/GOARCH).
	Platform *v1.Platform
	// Insecure allows plain HTTP and unverified TLS (--tls-verify=false).
	// Loopback registries get plain HTTP without it.
	Insecure bool
	// Progress receives the progress display (per layer on a terminal, one
	// line per finished layer otherwise); nil or Quiet: nothing.
	Progress io.Writer
	Quiet    bool
	// Jobs bounds the layers fetched at once; 0 means DefaultJobs.
	Jobs int
}

// PullPolicy says when a run asks the registry about an image the store
// already knows (podman's --pull, with its names).
type PullPolicy string

// Pull policies.
const (
	// PullMissing asks the registry only about an image the store does not
	// know: pulled, or resolved by an earlier lazy run (the default).
	PullMissing PullPolicy = "missing"
	// PullNewer checks a tag against the registry and fetches what changed;
	// when the registry cannot be asked, the image the store knows is used,
	// with a warning.
	PullNewer PullPolicy = "newer"
	// PullAlways is PullNewer without the fallback: the registry must
	// answer. (What the store holds is never fetched twice.)
	PullAlways PullPolicy = "always"
	// PullNever never asks the registry for the image: one the store does
	// not know is an error. A lazy run still fetches the file contents it
	// reads and has not cached.
	PullNever PullPolicy = "never"
)

// ParsePullPolicy checks s ("" is PullMissing).
func ParsePullPolicy(s string) (PullPolicy, error) {
	switch p := PullPolicy(s); p {
	case "":
		return PullMissing, nil
	case PullMissing, PullNewer, PullAlways, PullNever:
		return p, nil
	}
	return "", fmt.Errorf("--pull %q: want missing, newer, always or never", s)
}

// DefaultJobs is how many layers a pull fetches at once by default.
const DefaultJobs = 4

// Pull fetches ref from its registry into the store and names it. Layers
// already present are not fetched again; every fetched blob is verified
// against its digest (and each layer's tar against its diff_id) before it is
// kept. Pull is safe to run concurrently with other pulls (of the same image
// too) in this and other processes.
func (s *Store) Pull(ctx context.Context, refStr string, opts PullOptions) (*Image, error) {
	ref, err := ParseReference(refStr, opts.Insecure)
	if err != nil {
		return nil, err
	}
	image := refString(ref)
	want := opts.Platform
	if want == nil {
		want = HostPlatform()
	}
	slog.Debug("pull start", "stage", "pull", "image", image, "platform", platformString(want))

	sl, err := s.storeLock(ctx, false)
	if err != nil {
		return nil, err
	}
	defer sl.Unlock()

	c, err := newRegistryClient(ctx, ref, opts.Insecure)
	if err != nil {
		return nil, err
	}
	slog.Debug("registry ready", "stage", "pull", "registry", c.repo.RegistryStr(), "scheme", c.scheme)
	b, mt, mdigest, err := c.manifest(ctx, ref.Identifier())
	if err != nil {
		return nil, err
	}
	slog.Debug("manifest fetched", "stage", "pull", "digest", mdigest.String(), "mediaType", string(mt))

	var indexDigest *v1.Hash
	var toWrite []blobData
	if mt.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: parsing image index: %w", image, err)
		}
		child, err := choosePlatform(image, idx, want)
		if err != nil {
			return nil, err
		}
		d := mdigest
		indexDigest = &d
		toWrite = append(toWrite, blobData{d, b})
		slog.Debug("platform chosen", "stage", "pull", "platform", platformString(child.Platform), "manifest", child.Digest.String())
		b, mt, mdigest, err = c.manifest(ctx, child.Digest.String())
		if err != nil {
			return nil, err
		}
		if mt.IsIndex() {
			return nil, fmt.Errorf("%s: the index entry for %s is another index; nested indexes are not supported", image, platformString(want))
		}
	}
	switch mt {
	case types.DockerManifestSchema1, types.DockerManifestSchema1Signed:
		return nil, fmt.Errorf("%s: it is a Docker schema 1 image, which dabba does not support; push it again with a current tool", image)
	}
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: parsing manifest %s: %w", image, mdigest, err)
	}
	if err := checkHash(m.Config.Digest); err != nil {
		return nil, fmt.Errorf("%s: config: %w", image, err)
	}
	toWrite = append(toWrite, blobData{mdigest, b})

	var cfgBytes []byte
	if s.hasBlob(m.Config.Digest, -1) {
		cfgBytes, err = s.readBlob(m.Config.Digest)
	} else {
		cfgBytes, err = c.smallBlob(ctx, m.Config.Digest)
		toWrite = append(toWrite, blobData{m.Config.Digest, cfgBytes})
	}
	if err != nil {
		return nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cfgBytes))
	if err != nil {
		return nil, fmt.Errorf("%s: parsing config %s: %w", image, m.Config.Digest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("%s: manifest lists %d layers but the config %d diff_ids: the image is broken", image, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	if indexDigest == nil && opts.Platform != nil && !platformMatches(&v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}, want) {
		slog.Warn("image platform does not match the requested one", "stage", "pull", "image", image,
			"image_platform", cfg.OS+"/"+cfg.Architecture, "want", platformString(want))
		if opts.Progress != nil && !opts.Quiet {
			fmt.Fprintf(opts.Progress, "warning: %s is a single-platform image for %s/%s, not %s; pulling it anyway\n",
				image, cfg.OS, cfg.Architecture, platformString(want))
		}
	}

	img := &Image{
		Name:           image,
		ID:             m.Config.Digest.Hex,
		ManifestDigest: mdigest,
		IndexDigest:    indexDigest,
		Config:         cfg,
	}
	for i, ld := range m.Layers {
		if err := checkHash(ld.Digest); err != nil {
			return nil, fmt.Errorf("%s: layer %d: %w", image, i, err)
		}
		if err := checkHash(cfg.RootFS.DiffIDs[i]); err != nil {
			return nil, fmt.Errorf("%s: diff_id %d: %w", image, i, err)
		}
		if ld.Size < 0 {
			return nil, fmt.Errorf("%s: layer %s has negative size %d", image, ld.Digest, ld.Size)
		}
		if !isLayerMediaType(ld.MediaType) {
			return nil, fmt.Errorf("%s: layer %s has media type %q, which is not a layer dabba can use", image, ld.Digest, ld.MediaType)
		}
		img.Layers = append(img.Layers, Layer{Digest: ld.Digest, DiffID: cfg.RootFS.DiffIDs[i], Size: ld.Size, MediaType: ld.MediaType})
	}

	for _, bd := range toWrite {
		if err := s.putBlob(ctx, bd.h, bd.b); err != nil {
			return nil, err
		}
	}

	var p *progress
	if !opts.Quiet {
		p = newProgress(opts.Progress, img.Layers)
	}
	tarSizes, err := s.fetchLayers(ctx, c, img.Layers, opts.Jobs, p)
	p.close()
	if err != nil {
		return nil, err
	}

	rec := &record{Config: m.Config.Digest.String(), Pulled: time.Now().UTC()}
	if indexDigest != nil {
		rec.Index = indexDigest.String()
	}
	for i, l := range img.Layers {
		rec.Layers = append(rec.Layers, layerInfo{Digest: l.Digest.String(), DiffID: l.DiffID.String(), Size: l.Size, MediaType: string(l.MediaType), TarSize: tarSizes[i]})
		rec.Size += tarSizes[i]
	}
	img.Size = rec.Size
	err = s.updateRefs(ctx, func(db *refsDB) error {
		if old := db.Images[mdigest.String()]; old != nil {
			rec.Names = old.Names
		}
		db.Images[mdigest.String()] = rec
		db.setName(image, mdigest.String())
		img.Names = slices.Clone(rec.Names)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: recording the image: %w", image, err)
	}
	slog.Debug("pull done", "stage", "pull", "image", image, "id", img.ID)
	return img, nil
}

type blobData struct {
	h v1.Hash
	b []byte
}

// putBlob stores verified bytes under their digest, once.
func (s *Store) putBlob(ctx context.Context, h v1.Hash, b []byte) error {
	if s.hasBlob(h, int64(len(b))) {
		return nil
	}
	l, err := lockFile(ctx, s.lockPath("blob-"+h.Hex), true)
	if err != nil {
		return err
	}
	defer l.Unlock()
	if s.hasBlob(h, int64(len(b))) {
		return nil
	}
	return s.writeFileAtomic(s.BlobPath(h), b)
}

// fetchLayers fetches the layers, jobs at a time, and returns their
// uncompressed sizes. The first failure cancels the rest (their partial
// downloads stay for the next pull).
func (s *Store) fetchLayers(ctx context.Context, c *registryClient, ls []Layer, jobs int, p *progress) ([]int64, error) {
	if jobs <= 0 {
		jobs = DefaultJobs
	}
	sizes := make([]int64, len(ls))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	// Largest first: on a machine with few cores the pull lasts at least as
	// long as inflating its largest layer, which must not start last.
	order := make([]int, len(ls))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(ls[b].Size, ls[a].Size) })
	gate := newCPUGate()
	seen := map[v1.Hash]bool{}
	for _, i := range order {
		l := ls[i]
		if seen[l.Digest] {
			continue // the same blob twice in one image: fetched once, sized below
		}
		seen[l.Digest] = true
		g.Go(func() error {
			n, err := s.fetchLayer(withGate(gctx, gate, l.Size), c, l, p)
			sizes[i] = n
			return err
		})
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("pulling %s: %w (run the pull again to resume)", c.image, ctx.Err())
		}
		return nil, err
	}
	for i, l := range ls {
		if sizes[i] == 0 {
			for j := range ls[:i] {
				if ls[j].Digest == l.Digest {
					sizes[i] = sizes[j]
					break
				}
			}
		}
	}
	return sizes, nil
}

func isLayerMediaType(mt types.MediaType) bool {
	if mt.IsLayer() {
		return true
	}
	// OCI's zstd layers and plain tars; IsLayer knows gzip and docker's.
	s := string(mt)
	return strings.HasPrefix(s, "application/vnd.oci.image.layer.") || strings.HasPrefix(s, "application/vnd.docker.image.rootfs.")
}

// choosePlatform picks the manifest for want from an index.
func choosePlatform(image string, idx *v1.IndexManifest, want *v1.Platform) (*v1.Descriptor, error) {
	var have []string
	for i := range idx.Manifests {
		d := &idx.Manifests[i]
		if d.Platform == nil || d.Platform.OS == "unknown" {
			continue // attestations and other artifacts
		}
		if platformMatches(d.Platform, want) {
			if err := checkHash(d.Digest); err != nil {
				return nil, fmt.Errorf("%s: index entry for %s: %w", image, platformString(d.Platform), err)
			}
			return d, nil
		}
		have = append(have, platformString(d.Platform))
	}
	return nil, fmt.Errorf("%s: %w for platform %s (it has %s); choose one with --platform", image, errNoPlatform, platformString(want), strings.Join(have, ", "))
}

var errNoPlatform = errors.New("no image")
