package fs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/dabba/dabba/layers"
)

// Layer is one layer of an image to serve with OpenLayers.
type Layer struct {
	// Name names the layer in errors and in the tree (its digest).
	Name string
	// Path is the layer blob: a tar stream, gzip or zstd compressed or not.
	Path string
	// Index is the layer's index when known (the store keeps one per
	// blob); nil indexes the layer while unpacking it.
	Index *layers.Index
	// DiffID is the expected "sha256:<hex>" of the uncompressed tar, when
	// known; a mismatch is an error.
	DiffID string
}

// OpenLayers prepares an image's layers, bottom first, for serving: it
// decompresses each compressed blob into a file in dir (uncompressed blobs
// are read where they are), indexes the layers that come without an index,
// merges them, and opens the tar streams as TarFiles. The files it made
// are unlinked once open, so they vanish with the process however it ends
// (kill -9 included); the caller may remove dir at once. Close the
// TarFiles when done.
//
// This is the local way of reaching bytes: one decompression per mount,
// then pread. The lazy issue replaces it with a LayerReader that inflates
// from gzip checkpoints (layers/gzran) or fetches ranges from a registry.
func OpenLayers(dir string, ls []Layer) (*layers.Tree, *TarFiles, error) {
	start := time.Now()
	var ixs []*layers.Index
	var paths, diffIDs, made []string
	defer func() {
		for _, p := range made {
			os.Remove(p)
		}
	}()
	for i, l := range ls {
		name := l.Name
		if name == "" {
			name = filepath.Base(l.Path)
		}
		p, ix, err := unpack(dir, i, name, l)
		if err != nil {
			return nil, nil, err
		}
		if p != l.Path {
			made = append(made, p)
		}
		ixs = append(ixs, ix)
		paths = append(paths, p)
		diffIDs = append(diffIDs, l.DiffID)
	}
	tree, err := layers.Merge(ixs)
	if err != nil {
		return nil, nil, fmt.Errorf("merging layers: %w", err)
	}
	opts := TarFilesOptions{}
	for _, d := range diffIDs {
		if d != "" {
			opts.DiffIDs = diffIDs
		}
	}
	if opts.DiffIDs != nil {
		for i, d := range opts.DiffIDs {
			if d == "" {
				return nil, nil, fmt.Errorf("layer %s: no diff_id while others have one", ls[i].Name)
			}
		}
	}
	src, err := OpenTarFiles(paths, opts)
	if err != nil {
		return nil, nil, err
	}
	slog.Debug("layers ready", "stage", "fs", "layers", len(ls), "inodes", tree.NumInodes(), "took", time.Since(start))
	return tree, src, nil
}

// unpack returns the path of layer l's uncompressed tar stream and its
// index.
func unpack(dir string, i int, name string, l Layer) (string, *layers.Index, error) {
	f, err := os.Open(l.Path)
	if err != nil {
		return "", nil, fmt.Errorf("layer %s: %w", name, err)
	}
	defer f.Close()
	peek := make([]byte, 4)
	n, err := io.ReadFull(f, peek)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && err != io.EOF {
		return "", nil, fmt.Errorf("layer %s: %w", name, err)
	}
	if layers.DetectCompression(peek[:n]) == layers.Uncompressed {
		ix := l.Index
		if ix == nil {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return "", nil, err
			}
			if ix, err = layers.IndexLayer(bufio.NewReaderSize(f, 256<<10), name); err != nil {
				return "", nil, fmt.Errorf("indexing layer %s (%s): %w", name, l.Path, err)
			}
		}
		return l.Path, ix, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", nil, err
	}
	zr, c, err := layers.Decompress(f)
	if err != nil {
		return "", nil, fmt.Errorf("layer %s (%s): %w", name, l.Path, err)
	}
	defer zr.Close()
	out := filepath.Join(dir, fmt.Sprintf("layer%d.tar", i))
	w, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("unpacking layer %s: %w", name, err)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	ix := l.Index
	if ix == nil {
		// Index while writing: one pass.
		ix, err = layers.IndexLayer(io.TeeReader(zr, bw), name)
	} else {
		_, err = io.Copy(bw, zr)
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return "", nil, fmt.Errorf("unpacking %s layer %s (%s) into %s: %w", c, name, l.Path, dir, err)
	}
	if fi, err := os.Stat(out); err == nil && fi.Size() < ix.TarSize {
		os.Remove(out)
		return "", nil, fmt.Errorf("unpacking layer %s: %d bytes, its index says %d: %w", name, fi.Size(), ix.TarSize, layers.ErrCorrupt)
	}
	return out, ix, nil
}
