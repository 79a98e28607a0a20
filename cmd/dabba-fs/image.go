package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/dabba/dabba/fs"
	"github.com/dabba/dabba/internal/cli"
	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/store"
)

// image is an image ready to serve.
type image struct {
	name  string
	tree  *layers.Tree
	src   fs.LayerReader
	close func()
}

// imageLayers finds the layers of IMAGE in the store, or the layer files
// of --layers (comma-separated, bottom first) when given. Layers from the
// store come with their index.
func imageLayers(g *globals, ref, layerList string) (name string, ls []fs.Layer, err error) {
	if layerList != "" {
		for _, p := range strings.Split(layerList, ",") {
			if p == "" {
				return "", nil, usagef("--layers %q: empty file name", layerList)
			}
			ls = append(ls, fs.Layer{Path: p})
		}
		return "dabba-fs", ls, nil
	}
	s, err := store.Open(g.root)
	if err != nil {
		return "", nil, err
	}
	img, err := s.Lookup(ref)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil, fmt.Errorf("store %s: %w (or give layer files with --layers)", g.root, err)
	}
	if err != nil {
		return "", nil, err
	}
	for _, l := range img.Layers {
		ix, err := s.LayerIndex(l.Digest)
		if err != nil {
			return "", nil, fmt.Errorf("image %s: %w (pull it again to rebuild the index)", img.Name, err)
		}
		ls = append(ls, fs.Layer{Name: l.Digest.String(), Path: s.BlobPath(l.Digest), Index: ix, DiffID: l.DiffID.String()})
	}
	return img.Name, ls, nil
}

// mergeImage returns the merged tree of IMAGE or --layers without
// unpacking anything: the store's indexes, or one pass over each file.
func mergeImage(g *globals, ref, layerList string) (*layers.Tree, error) {
	name, ls, err := imageLayers(g, ref, layerList)
	if err != nil {
		return nil, err
	}
	var ixs []*layers.Index
	for _, l := range ls {
		ix := l.Index
		if ix == nil {
			if ix, err = indexFile(l.Path); err != nil {
				return nil, err
			}
		}
		ixs = append(ixs, ix)
	}
	tree, err := layers.Merge(ixs)
	if err != nil && ref != "" {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	return tree, err
}

// indexFile indexes a layer file, compressed or not.
func indexFile(p string) (*layers.Index, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("layer %w", err)
	}
	defer f.Close()
	r, _, err := layers.Decompress(f)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", p, err)
	}
	defer r.Close()
	return layers.IndexLayer(r, filepath.Base(p))
}

// openImage opens IMAGE from the store, or the layer files of --layers,
// for serving. An image of the store is read in place from its blobs, as
// `dabba run` reads it (cli.ImageTree); layer files are decompressed once
// into unlinked files.
func openImage(g *globals, ref, layerList string) (*image, error) {
	if layerList == "" {
		return openStoreImage(g, ref)
	}
	name, ls, err := imageLayers(g, ref, layerList)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "dabba-fs-")
	if err != nil {
		return nil, fmt.Errorf("directory for the unpacked layers: %w", err)
	}
	tree, src, err := fs.OpenLayers(tmp, ls)
	// The unpacked layers stay open but unlinked: nothing is left behind,
	// whatever ends this process.
	os.RemoveAll(tmp)
	if err != nil {
		if ref == "" {
			return nil, err // the layer files are named in err
		}
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	im := &image{name: name, tree: tree, src: src}
	im.close = func() { src.Close() }
	return im, nil
}

// openStoreImage opens IMAGE of the store for serving from its blobs.
func openStoreImage(g *globals, ref string) (*image, error) {
	s, err := store.Open(g.root)
	if err != nil {
		return nil, err
	}
	img, err := s.Lookup(ref)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("store %s: %w (or give layer files with --layers)", g.root, err)
	}
	if err != nil {
		return nil, err
	}
	tree, bs, err := cli.ImageTree(s, img)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "dabba-fs-")
	if err != nil {
		return nil, fmt.Errorf("directory for unpacked zstd layers: %w", err)
	}
	blobs, err := fs.OpenBlobs(tmp, bs)
	os.RemoveAll(tmp) // what it unpacked is open and unlinked
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Name, err)
	}
	return &image{name: img.Name, tree: tree, src: blobs, close: func() { blobs.Close() }}, nil
}
