package images

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"

	"github.com/dabba/dabba/layers"
)

// FormEStargz is eStargz layers, converted from the FormGzip image by
// BuildEStargz as stargz-snapshotter's `ctr-remote image optimize` does:
// same files, seekable gzip chunks, a TOC, and the files a run reads first
// placed before each layer's prefetch landmark.
const FormEStargz = "estargz"

// Layer descriptor annotations of an eStargz layer, as stargz-snapshotter
// sets them.
const (
	// AnnotationTOCDigest is the digest of the layer's TOC JSON.
	AnnotationTOCDigest = estargz.TOCJSONDigestAnnotation
	// AnnotationUncompressedSize is the size of the layer's uncompressed
	// tar, in decimal.
	AnnotationUncompressedSize = estargz.StoreUncompressedSizeAnnotation
)

// estargzRecipe names the conversion's parameters in the cache key: a
// change here must give new cache entries.
const estargzRecipe = "estargz v1 gzip-6 chunk-default parallel-4"

// estargzParallelism pins the number of sub-blobs estargz.Build compresses
// concurrently, which fixes the chunk boundaries: the same input gives the
// same blob on any machine.
const estargzParallelism = 4

// keepEStargz is how many cached eStargz conversions of one image (for
// different prioritized lists) are kept; older ones are removed.
const keepEStargz = 3

// BuildEStargz returns image name in form FormEStargz, from the cache or
// converted now from its FormGzip form (itself built first if missing).
//
// prioritized lists files of the merged image, absolute or relative to
// "/", in the order a run read them first (dabba's learned list, or
// `ctr-remote image optimize`'s record). Each is placed, in that order,
// before the prefetch landmark of the layer its content comes from (the
// topmost layer holding it); a layer holding none gets the no-prefetch
// landmark. Paths not in the merged image, and directories, are skipped
// and listed in Image.Missed. The conversion is cached keyed by the gzip
// form's key and the list.
func (b *Builder) BuildEStargz(ctx context.Context, name string, prioritized []string) (*Image, error) {
	src, err := b.Build(ctx, name, FormGzip)
	if err != nil {
		return nil, err
	}
	key, err := b.key(name)
	if err != nil {
		return nil, err
	}
	list := cleanPaths(prioritized)
	dir := filepath.Join(b.Cache, "images", key+"-"+FormEStargz+"-"+prioritizedKey(list))
	if img, err := load(dir); err == nil {
		img.Form = FormEStargz
		return img, nil
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("image cache %s: %w", tmp, err)
	}
	defer os.RemoveAll(tmp)
	b.logf("images: converting %s to eStargz (%d layers, %d prioritized files)", name, src.Layers, len(list))
	conv, err := convertEStargz(ctx, src.Image, tmp, list)
	if err != nil {
		return nil, fmt.Errorf("image %s in form %s: %w", name, FormEStargz, err)
	}
	srcDigest, err := src.Image.Digest()
	if err != nil {
		return nil, err
	}
	in := info{Name: name, Form: FormEStargz, Layers: len(conv.files), Cold: src.Cold,
		Prioritized: conv.prioritized, Missed: conv.missed, Source: srcDigest.String()}
	for _, f := range conv.files {
		in.Compressed += f.size
		in.Uncompressed += f.usize
	}
	if err := writeImageLayout(tmp, conv.image, in); err != nil {
		return nil, err
	}
	for _, f := range conv.files {
		os.Remove(f.path)
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("image cache %s: %w", dir, err)
	}
	pruneEStargz(filepath.Join(b.Cache, "images"), key, dir)
	return load(dir)
}

// cleanPaths returns the paths relative to "/", cleaned, without the root
// and without repeats, in their order.
func cleanPaths(ps []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range ps {
		c := strings.TrimPrefix(path.Clean("/"+p), "/")
		if c == "" || seen[c] {
			continue
		}
		seen[c] = true
		out = append(out, c)
	}
	return out
}

// prioritizedKey names a cleaned prioritized list in cache keys.
func prioritizedKey(list []string) string {
	return shortSum(estargzRecipe + "\n" + strings.Join(list, "\n"))
}

// pruneEStargz removes the cached eStargz conversions of the image key
// beyond the keepEStargz most recent, never keep.
func pruneEStargz(imagesDir, key, keep string) {
	m, _ := filepath.Glob(filepath.Join(imagesDir, key+"-"+FormEStargz+"-*"))
	type ent struct {
		p string
		t int64
	}
	var es []ent
	for _, p := range m {
		st, err := os.Stat(p)
		if err != nil || !st.IsDir() || strings.HasSuffix(p, ".tmp") || p == keep {
			continue
		}
		es = append(es, ent{p, st.ModTime().UnixNano()})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].t > es[j].t })
	for i, e := range es {
		if i+1 >= keepEStargz { // keep counts as one
			os.RemoveAll(e.p)
		}
	}
}

// writeImageLayout writes img as the OCI layout dir, with in beside it.
func writeImageLayout(dir string, img v1.Image, in info) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("image cache %s: %w", dir, err)
	}
	if err := p.AppendImage(img); err != nil {
		return fmt.Errorf("image cache %s: %w", dir, err)
	}
	if in.Manifest, err = img.Digest(); err != nil {
		return err
	}
	raw, _ := json.MarshalIndent(in, "", "  ")
	return os.WriteFile(filepath.Join(dir, "info.json"), raw, 0o644)
}

// converted is an image converted to eStargz: its layer blobs are files
// in the conversion's directory until the image is written elsewhere.
type converted struct {
	image       v1.Image
	files       []layerFile
	tocs        []string // each layer's TOC digest
	lists       [][]string
	prioritized int
	missed      []string
}

// convertEStargz converts every layer of src (gzip, or any compression
// go-containerregistry reads) into an eStargz blob in dir, gzip-compressed,
// with list (cleaned paths) assigned to the layers that hold them. The
// image's config is src's with the new layers' diff IDs.
func convertEStargz(ctx context.Context, src v1.Image, dir string, list []string) (*converted, error) {
	ls, err := src.Layers()
	if err != nil {
		return nil, err
	}
	// Each layer's tar, uncompressed, and its index: where each
	// prioritized file comes from is decided on the merged view.
	tars := make([]string, len(ls))
	defer func() {
		for _, t := range tars {
			if t != "" {
				os.Remove(t)
			}
		}
	}()
	idx := make([]*layers.Index, len(ls))
	for i, l := range ls {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		tars[i] = filepath.Join(dir, fmt.Sprintf("layer%d.tar", i))
		if idx[i], err = untar(l, tars[i], d.String()); err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, d, err)
		}
	}
	lists, missed, err := assignPrioritized(idx, list)
	if err != nil {
		return nil, err
	}
	c := &converted{lists: lists, missed: missed}
	cf, err := src.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs = nil
	cf.History = nil
	base, err := mutate.ConfigFile(empty.Image, cf)
	if err != nil {
		return nil, err
	}
	var adds []mutate.Addendum
	for i, l := range ls {
		lf, toc, notFound, err := buildEStargzLayer(ctx, tars[i], filepath.Join(dir, fmt.Sprintf("layer%d.esgz", i)), lists[i])
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		os.Remove(tars[i])
		tars[i] = ""
		c.missed = append(c.missed, notFound...)
		c.prioritized += len(lists[i]) - len(notFound)
		c.files = append(c.files, lf)
		c.tocs = append(c.tocs, toc)
		mt, err := l.MediaType()
		if err != nil {
			return nil, err
		}
		el, err := partial.CompressedToLayer(&lf)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{Layer: el, MediaType: mt, Annotations: map[string]string{
			AnnotationTOCDigest:        toc,
			AnnotationUncompressedSize: strconv.FormatInt(lf.usize, 10),
		}})
	}
	if c.image, err = mutate.Append(base, adds...); err != nil {
		return nil, err
	}
	return c, nil
}

// untar writes layer l's uncompressed tar to dst and returns its index.
func untar(l v1.Layer, dst, name string) (*layers.Index, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	f, err := os.Create(dst)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ix, err := layers.IndexLayer(io.TeeReader(rc, f), name)
	if err != nil {
		return nil, err
	}
	return ix, f.Close()
}

// assignPrioritized gives each layer the files of list (in list order)
// that the merged view takes from it: for each path present in the merged
// tree and not a directory, the topmost layer with an entry at that path.
// The rest are returned as missed.
func assignPrioritized(idx []*layers.Index, list []string) ([][]string, []string, error) {
	out := make([][]string, len(idx))
	if len(list) == 0 {
		return out, nil, nil
	}
	tree, err := layers.Merge(idx)
	if err != nil {
		return nil, nil, err
	}
	has := make([]map[string]bool, len(idx))
	for i, ix := range idx {
		has[i] = map[string]bool{}
		for _, e := range ix.Entries {
			if e.Type != layers.TypeWhiteout && e.Type != layers.TypeOpaque && e.Type != layers.TypeDir {
				has[i][e.Path] = true
			}
		}
	}
	var missed []string
	for _, p := range list {
		n := tree.Lookup(p)
		at := -1
		if n != nil && n.Type != layers.TypeDir {
			for i := len(idx) - 1; i >= 0; i-- {
				if has[i][p] {
					at = i
					break
				}
			}
		}
		if at < 0 {
			missed = append(missed, "/"+p)
			continue
		}
		out[at] = append(out[at], p)
	}
	return out, missed, nil
}

// buildEStargzLayer converts the tar at src into an eStargz blob at dst
// with prioritized (paths in the layer) before its prefetch landmark (the
// no-prefetch landmark when empty). It returns the blob's layerFile, its
// TOC digest and the prioritized paths estargz did not find.
func buildEStargzLayer(ctx context.Context, src, dst string, prioritized []string) (layerFile, string, []string, error) {
	in, err := os.Open(src)
	if err != nil {
		return layerFile{}, "", nil, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return layerFile{}, "", nil, err
	}
	var notFound []string
	blob, err := estargz.Build(io.NewSectionReader(in, 0, st.Size()),
		estargz.WithPrioritizedFiles(prioritized),
		estargz.WithAllowPrioritizeNotFound(&notFound),
		estargz.WithCompressionLevel(gzip.DefaultCompression),
		estargz.WithParallelism(estargzParallelism),
		estargz.WithContext(ctx))
	if err != nil {
		return layerFile{}, "", nil, fmt.Errorf("estargz.Build of %s: %w", src, err)
	}
	out, err := os.Create(dst)
	if err != nil {
		blob.Close()
		return layerFile{}, "", nil, err
	}
	defer out.Close()
	ch := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, ch), blob)
	if cerr := blob.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return layerFile{}, "", nil, fmt.Errorf("writing eStargz blob %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return layerFile{}, "", nil, err
	}
	usize, err := blob.UncompressedSize()
	if err != nil {
		return layerFile{}, "", nil, err
	}
	diff, err := v1.NewHash(blob.DiffID().String())
	if err != nil {
		return layerFile{}, "", nil, err
	}
	for i, p := range notFound {
		notFound[i] = "/" + strings.TrimPrefix(p, "/")
	}
	return layerFile{path: dst, digest: sum(ch), diff: diff, size: n, usize: usize}, blob.TOCDigest().String(), notFound, nil
}
