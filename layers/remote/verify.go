package remote

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrVerify reports fetched bytes that do not match their digest, twice in
// a row. The fs package maps it to EIO.
var ErrVerify = errors.New("remote: content does not match its digest")

// VerifyError names the blob and the piece that failed verification. It
// wraps ErrVerify.
type VerifyError struct {
	Blob       v1.Hash
	Piece      string // "span 3" or "chunk 0 of usr/bin/foo"
	Start, End int64  // compressed bytes [Start, End) of the blob
	Want, Got  Digest
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("blob %s: %s (compressed bytes %d-%d) fetched twice, still wrong: digest %s, want %s; the registry serves damaged data",
		e.Blob, e.Piece, e.Start, e.End-1, e.Got, e.Want)
}

func (e *VerifyError) Unwrap() error { return ErrVerify }

// piece is a unit of verification: compressed bytes [start, end) of a
// blob, decoded (identity for gzip spans, inflated for eStargz chunks) into
// content whose SHA-256 is digest.
type piece struct {
	start, end int64
	digest     Digest
	name       func() string                    // for errors
	decode     func(raw []byte) ([]byte, error) // nil: the raw bytes are the content
}

// verifier fetches pieces of one blob, verifies them, caches them (on disk
// and in a small in-memory LRU) and shares concurrent fetches of the same
// piece.
type verifier struct {
	f     *Fetcher
	cache *Cache // may be nil

	mu       sync.Mutex
	inflight map[Digest]*call
	mem      lru
}

type call struct {
	done chan struct{}
	data []byte
	err  error
}

// memCacheBytes bounds the in-memory copies of verified pieces a layer
// keeps: a gzip decoder reads a span in 64 KiB steps, so the last few
// spans must not be read and hashed again from disk for each step.
const memCacheBytes = 4 << 20

func newVerifier(f *Fetcher, cache *Cache) *verifier {
	return &verifier{f: f, cache: cache, inflight: map[Digest]*call{}, mem: lru{max: memCacheBytes}}
}

// get returns the verified content of every piece, fetching the missing
// ones together (the Fetcher coalesces neighbours).
func (v *verifier) get(ctx context.Context, ps []piece) ([][]byte, error) {
	out := make([][]byte, len(ps))
	var mine []int              // pieces this call fetches
	var calls []*call           // one per element of mine
	var waits = map[int]*call{} // pieces another call is fetching
	v.mu.Lock()
	for i, p := range ps {
		if b, ok := v.mem.get(p.digest); ok {
			out[i] = b
			continue
		}
		if c, ok := v.inflight[p.digest]; ok {
			waits[i] = c
			continue
		}
		c := &call{done: make(chan struct{})}
		v.inflight[p.digest] = c
		mine = append(mine, i)
		calls = append(calls, c)
	}
	v.mu.Unlock()

	if len(mine) > 0 {
		v.fetch(ctx, ps, mine, calls)
		for k, i := range mine {
			if calls[k].err != nil {
				return nil, calls[k].err
			}
			out[i] = calls[k].data
		}
	}
	for i, c := range waits {
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("blob %s: %w", v.f.digest, ctx.Err())
		}
		if c.err != nil && ctx.Err() == nil && (errors.Is(c.err, context.Canceled) || errors.Is(c.err, context.DeadlineExceeded)) {
			// The read that was fetching it gave up (an interrupted
			// syscall); this one has not.
			b, err := v.get(ctx, ps[i:i+1])
			if err != nil {
				return nil, err
			}
			out[i] = b[0]
			continue
		}
		if c.err != nil {
			return nil, c.err
		}
		out[i] = c.data
	}
	return out, nil
}

// ensure makes every piece of ps present in the disk cache, fetching and
// verifying only those it does not hold: what a prefetch or the background
// fetch needs, without reading and hashing again what an earlier run
// cached (a read checks a piece when it loads it). Without a cache it is
// get, which checks that the registry serves them.
func (v *verifier) ensure(ctx context.Context, ps []piece) error {
	if v.cache != nil {
		missing := make([]piece, 0, len(ps))
		for _, p := range ps {
			if !v.cache.Has(p.digest) {
				missing = append(missing, p)
			}
		}
		ps = missing
	}
	if len(ps) == 0 {
		return nil
	}
	_, err := v.get(ctx, ps)
	return err
}

// fetch resolves calls[k] for ps[mine[k]]: from the disk cache, else from
// the registry, verified, refetched once on a mismatch.
func (v *verifier) fetch(ctx context.Context, ps []piece, mine []int, calls []*call) {
	finish := func(k int, data []byte, err error) {
		c := calls[k]
		c.data, c.err = data, err
		v.mu.Lock()
		delete(v.inflight, ps[mine[k]].digest)
		if err == nil {
			v.mem.put(ps[mine[k]].digest, data)
		}
		v.mu.Unlock()
		close(c.done)
	}
	var missing []int // indexes into mine
	for k, i := range mine {
		if v.cache != nil {
			if b, ok := v.cache.Get(ps[i].digest); ok {
				finish(k, b, nil)
				continue
			}
		}
		missing = append(missing, k)
	}
	for attempt := 0; len(missing) > 0; attempt++ {
		if attempt > 0 {
			if err := v.f.settle(ctx); err != nil {
				for _, k := range missing {
					finish(k, nil, err)
				}
				return
			}
		}
		reads := make([]Read, len(missing))
		for j, k := range missing {
			p := ps[mine[k]]
			reads[j] = Read{Off: p.start, Buf: make([]byte, p.end-p.start)}
		}
		if err := v.f.ReadMany(ctx, reads); err != nil {
			for _, k := range missing {
				finish(k, nil, err)
			}
			return
		}
		var again []int
		for j, k := range missing {
			p := ps[mine[k]]
			data, got, err := decodeAndHash(p, reads[j].Buf)
			if err == nil && got == p.digest {
				if v.cache != nil {
					if err := v.cache.Put(p.digest, data); err != nil {
						// A full or read-only cache disk costs speed, not correctness.
						logCacheError(err)
					}
				}
				finish(k, data, nil)
				continue
			}
			if attempt == 0 {
				again = append(again, k)
				continue
			}
			if err != nil {
				finish(k, nil, fmt.Errorf("%w: blob %s: %s (compressed bytes %d-%d): %w", ErrVerify, v.f.digest, p.name(), p.start, p.end-1, err))
			} else {
				finish(k, nil, &VerifyError{Blob: v.f.digest, Piece: p.name(), Start: p.start, End: p.end, Want: p.digest, Got: got})
			}
		}
		missing = again
	}
}

func decodeAndHash(p piece, raw []byte) ([]byte, Digest, error) {
	data := raw
	if p.decode != nil {
		var err error
		if data, err = p.decode(raw); err != nil {
			return nil, Digest{}, err
		}
	}
	return data, sha256.Sum256(data), nil
}

// lru is a byte-capped map of recently used pieces. Not safe for
// concurrent use: the verifier's mutex guards it.
type lru struct {
	max, size int64
	ll        list.List
	m         map[Digest]*list.Element
}

type lruEntry struct {
	d Digest
	b []byte
}

func (l *lru) get(d Digest) ([]byte, bool) {
	e, ok := l.m[d]
	if !ok {
		return nil, false
	}
	l.ll.MoveToFront(e)
	return e.Value.(*lruEntry).b, true
}

func (l *lru) put(d Digest, b []byte) {
	if l.m == nil {
		l.m = map[Digest]*list.Element{}
	}
	if e, ok := l.m[d]; ok {
		l.ll.MoveToFront(e)
		return
	}
	if int64(len(b)) > l.max {
		return
	}
	l.m[d] = l.ll.PushFront(&lruEntry{d, b})
	l.size += int64(len(b))
	for l.size > l.max {
		e := l.ll.Back()
		le := e.Value.(*lruEntry)
		l.ll.Remove(e)
		delete(l.m, le.d)
		l.size -= int64(len(le.b))
	}
}
