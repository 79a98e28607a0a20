package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/dabba/dabba/fs"
	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/store"
)

// ImageTree returns what serving a pulled image over FUSE needs, from the
// store: the merged tree of its layers and each layer's blob as
// fs.OpenBlobs reads it in place: gzip through its checkpoints, every read
// checked against the blob's chunk checksums, inflated spans kept in the
// store for later mounts. Nothing is extracted. The tree is the one saved
// in the store (store.MergedTree) when there is one, else merged from the
// layers' indexes and saved for the next time; with a saved tree, only the
// layers read without checkpoints (zstd, or gzip pulled without them) have
// their index read.
func ImageTree(st *store.Store, img *store.Image) (*layers.Tree, []fs.Blob, error) {
	tree, err := st.MergedTree(img)
	if err == nil {
		bs, _, err := imageBlobs(st, img, false)
		if err != nil {
			return nil, nil, err
		}
		slog.Debug("merged tree", "stage", "fs", "image", img.Name, "from", "saved")
		return tree, bs, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		slog.Warn("saved merged tree unusable; merging the layers again", "stage", "fs", "err", err)
	}
	bs, ixs, err := imageBlobs(st, img, true)
	if err != nil {
		return nil, nil, err
	}
	if tree, err = layers.Merge(ixs); err != nil {
		return nil, nil, fmt.Errorf("image %s: %w", img.Name, err)
	}
	slog.Debug("merged tree", "stage", "fs", "image", img.Name, "from", "layer indexes")
	if err := st.SaveMergedTree(img, tree); err != nil {
		slog.Debug("merged tree not saved", "stage", "fs", "image", img.Name, "err", err)
	}
	return tree, bs, nil
}

// imageBlobs returns img's layer blobs and, with all, every layer's entry
// index (bottom first); without, only the indexes of the blobs that have
// no checkpoints (OpenBlobs decompresses those and needs them).
func imageBlobs(st *store.Store, img *store.Image, all bool) ([]fs.Blob, []*layers.Index, error) {
	ixs := make([]*layers.Index, 0, len(img.Layers))
	bs := make([]fs.Blob, 0, len(img.Layers))
	for _, l := range img.Layers {
		sums, err := st.ChunkSums(l.Digest)
		if err != nil {
			return nil, nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		b := fs.Blob{
			Name: l.Digest.String(), Path: st.BlobPath(l.Digest),
			ChunkSums: sums, ChunkSize: store.BlobChunkSize,
			DiffID:  l.DiffID.String(),
			SpanDir: st.InflatedDir(l.Digest),
		}
		ck, err := st.CheckpointsForReading(l.Digest)
		switch {
		case err == nil:
			b.Checkpoints = ck
		case !errors.Is(err, os.ErrNotExist):
			return nil, nil, fmt.Errorf("image %s: %w (pull it again to rebuild it)", img.Name, err)
		}
		if all || b.Checkpoints == nil {
			ix, err := st.LayerIndex(l.Digest)
			if err != nil {
				return nil, nil, fmt.Errorf("image %s: %w (pull it again to rebuild the index)", img.Name, err)
			}
			b.Index = ix
			ixs = append(ixs, ix)
		}
		bs = append(bs, b)
	}
	return bs, ixs, nil
}
