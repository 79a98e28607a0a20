package store

import (
	"hash"
	"io"
	"os"
	"sync"
)

// The pass over a layer (runPass) runs as three stages in their own
// goroutines, so that on a machine with few cores the one stage that cannot
// be split, inflating the largest layer, is never waiting for another:
//
//	produce   network -> tmp/<hex>.partial, sha256 + chunk sums of the blob
//	inflate   the partial file, read behind the producer -> tar buffers
//	index     sha256 of the tar (diff_id) + layers.IndexLayer
//
// The producer does not wait for the consumers: the blob goes to its
// partial file at the network's pace and the inflater reads it back from
// the page cache (fileFeed), so a fast registry is drained early and the
// CPU left to decompression. The inflater hands the index stage whole
// buffers (tarBufSize) over a channel (bufPipe), so neither stage pays for
// small synchronous hand-offs. The stages of gzip layers take their CPU
// from the pull's cpuGate (cpugate.go), largest layer first.
//
// Measured on the bench's large image (4 gzip layers, 398 MiB, the largest
// 269 MiB / 560 MiB uncompressed; 2 cores, registry on loopback): the pass
// needs about 3.8 s of CPU (inflate 2.7 s, sha256 0.75 s, file and socket
// I/O 0.35 s). With the former two stages (download | inflate + hash +
// index) the largest layer's chain alone took 2 s of one core and shared
// it fairly with the others, so the pull took 2.4 s at 150% CPU; with
// three stages and the gate, 2.0 s at 190%, which is the CPU's floor.

// fileFeed tells a reader of a file how much of it a writer has completed.
type fileFeed struct {
	mu      sync.Mutex
	cond    sync.Cond
	n       int64 // bytes of the file that are final
	err     error // set when the writer stopped: io.EOF or its error
	waiting bool
}

func newFileFeed() *fileFeed {
	f := &fileFeed{}
	f.cond.L = &f.mu
	return f
}

// advance publishes n more final bytes.
func (f *fileFeed) advance(n int64) {
	f.mu.Lock()
	f.n += n
	if f.waiting {
		f.waiting = false
		f.cond.Broadcast()
	}
	f.mu.Unlock()
}

// finish records that the writer stopped, with io.EOF or an error.
func (f *fileFeed) finish(err error) {
	f.mu.Lock()
	f.err = err
	f.cond.Broadcast()
	f.mu.Unlock()
}

// avail returns the count of final bytes and, if the writer stopped, its
// end, without waiting.
func (f *fileFeed) avail(pos int64) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n > pos {
		return f.n, nil
	}
	return f.n, f.err
}

// wait returns the count of final bytes once it exceeds pos, or the
// writer's end (io.EOF or its error) if it stopped at or before pos.
func (f *fileFeed) wait(pos int64) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.n <= pos && f.err == nil {
		f.waiting = true
		f.cond.Wait()
	}
	if f.n > pos {
		return f.n, nil
	}
	return f.n, f.err
}

// feedReader reads the file f as far as its feed says it is written.
type feedReader struct {
	f    *os.File
	feed *fileFeed
	pos  int64
	// slot is the reading goroutine's CPU token, given back while it waits
	// for the writer; the reader keeps its count of bytes left (of size)
	// up to date.
	slot *gateSlot
	size int64
}

// peek returns the first n bytes of the file (fewer if it is shorter)
// without moving the read position.
func (r *feedReader) peek(n int) ([]byte, error) {
	var end int64
	var err error
	for end, err = r.feed.wait(0); err == nil && end < int64(n); end, err = r.feed.wait(end) {
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	b := make([]byte, min(int64(n), end))
	if _, err := r.f.ReadAt(b, 0); err != nil {
		return nil, &errSource{err}
	}
	return b, nil
}

func (r *feedReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	end, err := r.feed.avail(r.pos)
	if end <= r.pos && err == nil {
		held := r.slot != nil && r.slot.held
		if held {
			r.slot.release()
		}
		end, err = r.feed.wait(r.pos)
		if held {
			r.slot.acquire()
		}
	}
	if err != nil {
		return 0, err
	}
	if rest := end - r.pos; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := r.f.ReadAt(p, r.pos)
	r.pos += int64(n)
	if r.slot != nil {
		r.slot.left.Store(r.size - r.pos)
	}
	if err == io.EOF && n > 0 {
		err = nil
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, &errSource{err}
	}
	return n, nil
}

// tarBufSize is the size of the buffers the inflater hands to the index
// stage; tarBufs of them circulate.
const (
	tarBufSize = 512 << 10
	tarBufs    = 4
)

// bufPipe carries a stream from one goroutine to another in whole
// buffers. The writer side is pump; the reader side is Read, which also
// hashes each buffer as it arrives.
type bufPipe struct {
	full chan []byte
	free chan []byte
	stop chan struct{} // closed by the reader when it gives up
	err  error         // the writer's end: io.EOF or its error; set before full is closed

	h   hash.Hash
	cur []byte // unread part of the buffer being read
	buf []byte // the buffer being read, to return to free
	// slot is the reader's CPU token, held while it works on a buffer.
	slot *gateSlot
}

func newBufPipe(h hash.Hash, slot *gateSlot) *bufPipe {
	bp := &bufPipe{
		full: make(chan []byte, tarBufs),
		free: make(chan []byte, tarBufs),
		stop: make(chan struct{}),
		h:    h,
		slot: slot,
	}
	for range tarBufs {
		bp.free <- make([]byte, tarBufSize)
	}
	return bp
}

// pump copies r into the pipe until r ends or the reader stops, holding
// slot's token while it reads r (r gives it back while it waits).
func (bp *bufPipe) pump(r io.Reader, slot *gateSlot) {
	defer close(bp.full)
	defer slot.release()
	for {
		var b []byte
		select {
		case b = <-bp.free:
		case <-bp.stop:
			bp.err = errConsumerDone
			return
		}
		slot.acquire()
		n, err := io.ReadFull(r, b)
		slot.release()
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		if n > 0 {
			select {
			case bp.full <- b[:n]:
			case <-bp.stop:
				bp.err = errConsumerDone
				return
			}
		}
		if err != nil {
			bp.err = err
			return
		}
	}
}

func (bp *bufPipe) Read(p []byte) (int, error) {
	for len(bp.cur) == 0 {
		if bp.buf != nil {
			bp.free <- bp.buf[:cap(bp.buf)]
			bp.buf = nil
		}
		bp.slot.release()
		b, ok := <-bp.full
		if !ok {
			return 0, bp.err
		}
		bp.slot.acquire()
		bp.h.Write(b)
		bp.buf, bp.cur = b, b
	}
	n := copy(p, bp.cur)
	bp.cur = bp.cur[n:]
	return n, nil
}

// WriteTo lets io.Copy drain the pipe without copying.
func (bp *bufPipe) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(bp.cur) > 0 {
			n, err := w.Write(bp.cur)
			total += int64(n)
			bp.cur = bp.cur[n:]
			if err != nil {
				return total, err
			}
		}
		if _, err := bp.Read(nil); err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
	}
}

// close stops the writer if it is still running.
func (bp *bufPipe) close() {
	select {
	case <-bp.stop:
	default:
		close(bp.stop)
	}
}
