package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/dabba/dabba/fs"
	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/store"
)

// ImageBlobs returns what serving a pulled image over FUSE needs, from the
// store: each layer's entry index (bottom first, for layers.Merge) and its
// blob as fs.OpenBlobs reads it in place: gzip through its checkpoints,
// every read checked against the blob's chunk checksums, inflated spans
// kept in the store for later mounts. Nothing is extracted.
func ImageBlobs(st *store.Store, img *store.Image) ([]*layers.Index, []fs.Blob, error) {
	ixs := make([]*layers.Index, 0, len(img.Layers))
	bs := make([]fs.Blob, 0, len(img.Layers))
	for _, l := range img.Layers {
		ix, err := st.LayerIndex(l.Digest)
		if err != nil {
			return nil, nil, fmt.Errorf("image %s: %w (pull it again to rebuild the index)", img.Name, err)
		}
		sums, err := st.ChunkSums(l.Digest)
		if err != nil {
			return nil, nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		b := fs.Blob{
			Name: l.Digest.String(), Path: st.BlobPath(l.Digest),
			ChunkSums: sums, ChunkSize: store.BlobChunkSize,
			Index: ix, DiffID: l.DiffID.String(),
			SpanDir: st.InflatedDir(l.Digest),
		}
		ck, err := st.Checkpoints(l.Digest)
		switch {
		case err == nil:
			b.Checkpoints = ck
		case !errors.Is(err, os.ErrNotExist):
			return nil, nil, fmt.Errorf("image %s: %w (pull it again to rebuild it)", img.Name, err)
		}
		ixs = append(ixs, ix)
		bs = append(bs, b)
	}
	return ixs, bs, nil
}
