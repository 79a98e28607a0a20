package gzran

import (
	"errors"
	"io"
)

// IndexWriter is the push form of Indexer, for callers that receive the
// compressed blob as writes (an io.MultiWriter beside the blob file and its
// digest): gzip bytes written to it are decompressed to w and indexed. It
// runs the decoder in its own goroutine, connected by an io.Pipe.
type IndexWriter struct {
	pw   *io.PipeWriter
	done chan struct{}
	x    *Indexer
	err  error
}

// NewIndexWriter returns an IndexWriter that writes the decompressed stream
// to w (io.Discard if only the index is wanted), with checkpoints every span
// bytes (DefaultSpan if span ≤ 0). Close must be called.
func NewIndexWriter(w io.Writer, span int64) *IndexWriter {
	pr, pw := io.Pipe()
	iw := &IndexWriter{pw: pw, done: make(chan struct{}), x: NewIndexer(pr, span)}
	go func() {
		defer close(iw.done)
		_, err := iw.x.WriteTo(w)
		if err == nil {
			_, err = iw.x.Index()
		}
		iw.err = err
		if err == nil {
			err = errors.New("gzran: data written after the end of the gzip stream")
		}
		pr.CloseWithError(err) // unblock a writer still writing
	}()
	return iw
}

// Write implements io.Writer. It fails once the stream is found corrupt.
func (iw *IndexWriter) Write(p []byte) (int, error) {
	return iw.pw.Write(p)
}

// Close ends the compressed input and waits for decoding to finish,
// returning the first decoding or writing error.
func (iw *IndexWriter) Close() error {
	iw.pw.Close()
	<-iw.done
	return iw.err
}

// Index returns the finished index; call it after Close.
func (iw *IndexWriter) Index() (*Index, error) {
	select {
	case <-iw.done:
	default:
		return nil, errors.New("gzran: index not complete: Close the IndexWriter first")
	}
	if iw.err != nil {
		return nil, iw.err
	}
	return iw.x.Index()
}
