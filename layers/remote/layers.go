package remote

import (
	"context"
	"fmt"
	"io"
)

// Layers are the readers of an image's layers (GzipLayer, EStargz, or any
// io.ReaderAt over a layer's uncompressed tar stream), bottom first, as
// layers.Merge numbers them. It has the shape of fs.LayerReader.
type Layers []io.ReaderAt

// ReadAt reads from layer number layer (layers.Node.Layer) at off, an
// offset its index recorded.
func (ls Layers) ReadAt(layer int, p []byte, off int64) (int, error) {
	if layer < 0 || layer >= len(ls) || ls[layer] == nil {
		return 0, fmt.Errorf("remote: no reader for layer %d of %d", layer, len(ls))
	}
	return ls[layer].ReadAt(p, off)
}

// Download writes the whole blob to w in order, fetching MaxRequest-sized
// ranges MaxConcurrent at a time: for layers that have no index and must be
// fetched whole (while an index is built from the stream), and for
// `dabba index push`. The bytes are not verified here: hash the stream
// against the blob's digest.
func (f *Fetcher) Download(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	step := f.opts.MaxRequest
	n := int((f.size + step - 1) / step)
	type part struct {
		buf  []byte
		err  error
		done chan struct{}
	}
	parts := make([]*part, n)
	start := func(i int) {
		off := int64(i) * step
		p := &part{buf: make([]byte, min(step, f.size-off)), done: make(chan struct{})}
		parts[i] = p
		go func() {
			defer close(p.done)
			p.err = f.fetch(ctx, off, p.buf)
		}()
	}
	ahead := f.opts.MaxConcurrent
	for i := 0; i < n && i < ahead; i++ {
		start(i)
	}
	for i := 0; i < n; i++ {
		p := parts[i]
		<-p.done
		if p.err != nil {
			return p.err
		}
		if _, err := w.Write(p.buf); err != nil {
			return fmt.Errorf("blob %s: %w", f.digest, err)
		}
		parts[i] = nil
		if i+ahead < n {
			start(i + ahead)
		}
	}
	return nil
}
