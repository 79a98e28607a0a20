package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Defaults of Options.
const (
	// DefaultMaxConcurrent bounds the HTTP requests one Fetcher has in
	// flight: enough to fill a long fat link with range requests, few enough
	// not to be throttled by a registry.
	DefaultMaxConcurrent = 6
	// DefaultMergeGap: two wanted ranges at most this far apart are fetched
	// by one request. Fetching the gap costs less than a round trip from
	// about 64 KiB at 100 Mbit/s and 5 ms.
	DefaultMergeGap = 64 << 10
	// DefaultMaxRequest caps the size of one coalesced request, so a large
	// prefetch is spread over the connection pool.
	DefaultMaxRequest = 4 << 20
	// DefaultRetries is how many times a failed request (connection error,
	// cut body, 429 or 5xx) is retried.
	DefaultRetries = 4
	// DefaultBackoff is the delay before the first retry; it doubles with
	// each retry, up to maxBackoff.
	DefaultBackoff = 100 * time.Millisecond
	// DefaultStallTimeout is how long a request may receive nothing.
	DefaultStallTimeout = 30 * time.Second
	maxBackoff          = 5 * time.Second
	// redirectTTL is how long requests go straight to the storage URL a
	// registry redirected a blob GET to, saving a round trip to the
	// registry per range. Signed storage URLs live for minutes at least;
	// one that fails earlier is dropped at its first error.
	redirectTTL = time.Minute
)

// Options tune a Fetcher. The zero value is usable.
type Options struct {
	// Refresh is called when the registry (or the storage it redirects to)
	// answers 401 Unauthorized, typically because a bearer token expired.
	// It returns the transport to use from then on; the request is retried
	// once with it. Nil makes a 401 an error.
	Refresh func(ctx context.Context) (http.RoundTripper, error)
	// MaxConcurrent bounds the requests in flight (DefaultMaxConcurrent).
	MaxConcurrent int
	// MergeGap is the largest gap between two wanted ranges fetched by one
	// request (DefaultMergeGap); negative disables merging.
	MergeGap int64
	// MaxRequest caps the size of a coalesced request (DefaultMaxRequest).
	// A single wanted range larger than it is fetched whole.
	MaxRequest int64
	// Retries bounds the retries of one request (DefaultRetries);
	// negative disables them.
	Retries int
	// Backoff is the first retry delay (DefaultBackoff), doubled per retry.
	Backoff time.Duration
	// StallTimeout ends a request that receives nothing for that long
	// (DefaultStallTimeout); it is then retried like a broken connection,
	// so a registry that stops sending never hangs a read.
	StallTimeout time.Duration
	// TempDir holds the local copy of a blob whose registry ignores Range
	// requests (os.TempDir() if empty). The file is unlinked as soon as it
	// is created, so nothing is left behind.
	TempDir string
	// Activity, when not nil, counts the requests in flight that are not
	// made with a Background context, shared by the Fetchers of an image,
	// so that its background fetch can give way to them.
	Activity *Activity
}

// Activity counts the foreground requests in flight of a group of
// Fetchers (Options.Activity) and when the last one ended. It is safe for
// concurrent use.
type Activity struct {
	n    atomic.Int64
	last atomic.Int64 // UnixNano of the last end
}

// Idle reports how long no foreground request has been in flight (0 while
// one is; very long for a nil Activity).
func (a *Activity) Idle() time.Duration {
	if a == nil {
		return time.Duration(1<<63 - 1)
	}
	if a.n.Load() > 0 {
		return 0
	}
	return time.Since(time.Unix(0, a.last.Load()))
}

func (a *Activity) begin() { a.n.Add(1) }

func (a *Activity) end() {
	a.last.Store(time.Now().UnixNano())
	a.n.Add(-1)
}

type backgroundKey struct{}

// Background returns a context whose fetches do not count as foreground
// activity (Options.Activity): a background fetch's own requests.
func Background(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

func isBackground(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}

// Stats counts a Fetcher's traffic, for tests and benchmarks.
type Stats struct {
	// Requests is the number of HTTP requests sent (redirects not counted
	// separately).
	Requests int64
	// BytesFetched is the number of body bytes received.
	BytesFetched int64
	// Retries counts requests repeated after a failure.
	Retries int64
	// RangeIgnored counts responses that ignored a Range header (200 with
	// the whole body).
	RangeIgnored int64
	// WholeBlob is 1 once the Fetcher has switched to a local copy of the
	// whole blob.
	WholeBlob int64
}

// Read is one range a ReadMany fills: Buf gets the bytes at Off.
type Read struct {
	Off int64
	Buf []byte
}

// Fetcher reads a compressed blob of a registry by HTTP Range requests: an
// io.ReaderAt over the blob's bytes as the registry sends them. It does not
// verify what it returns (see Verifier for that); it does handle the ways a
// registry's HTTP can go wrong (see the package documentation). It is safe
// for concurrent use.
type Fetcher struct {
	url    string
	digest v1.Hash
	size   int64
	opts   Options
	sem    chan struct{}
	ctx    context.Context // ends with Close
	cancel context.CancelFunc

	mu       sync.Mutex
	rt       http.RoundTripper
	direct   string    // where the registry last redirected blob GETs
	directAt time.Time // when
	whole    *wholeBlob
	wholeBad int // whole-blob downloads that failed their digest

	requests, bytes, retries, ignored, wholeN atomic.Int64
}

// NewFetcher returns a Fetcher of the blob digest, size bytes long, at url
// (https://registry/v2/REPO/blobs/DIGEST), sending requests through rt,
// which adds the registry's credentials (go-containerregistry's
// transport.NewWithContext gives one). A nil opts means the defaults.
func NewFetcher(rt http.RoundTripper, url string, digest v1.Hash, size int64, opts *Options) (*Fetcher, error) {
	if rt == nil {
		rt = http.DefaultTransport
	}
	if size < 0 {
		return nil, fmt.Errorf("blob %s: negative size %d", digest, size)
	}
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return nil, fmt.Errorf("blob %s: url %q is not http(s)", digest, url)
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	if o.MergeGap == 0 {
		o.MergeGap = DefaultMergeGap
	}
	if o.MaxRequest <= 0 {
		o.MaxRequest = DefaultMaxRequest
	}
	if o.Retries == 0 {
		o.Retries = DefaultRetries
	} else if o.Retries < 0 {
		o.Retries = 0
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Fetcher{
		url: url, digest: digest, size: size, opts: o, rt: rt,
		sem: make(chan struct{}, o.MaxConcurrent), ctx: ctx, cancel: cancel,
	}, nil
}

// Digest returns the blob's digest.
func (f *Fetcher) Digest() v1.Hash { return f.digest }

// Size returns the blob's size.
func (f *Fetcher) Size() int64 { return f.size }

// Stats returns the traffic so far.
func (f *Fetcher) Stats() Stats {
	return Stats{
		Requests: f.requests.Load(), BytesFetched: f.bytes.Load(), Retries: f.retries.Load(),
		RangeIgnored: f.ignored.Load(), WholeBlob: f.wholeN.Load(),
	}
}

// Close stops any background download and releases the local copy of the
// blob, if one was made. Reads after Close fail.
func (f *Fetcher) Close() error {
	f.cancel()
	f.mu.Lock()
	w := f.whole
	f.whole = nil
	f.mu.Unlock()
	if w != nil {
		w.close()
	}
	return nil
}

// ReadAt implements io.ReaderAt over the compressed blob.
func (f *Fetcher) ReadAt(p []byte, off int64) (int, error) {
	return f.ReadAtContext(f.ctx, p, off)
}

// ReadAtContext is ReadAt with a context that can cancel the read.
func (f *Fetcher) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blob %s: read at negative offset %d", f.digest, off)
	}
	if off >= f.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := len(p)
	if rest := f.size - off; int64(n) > rest {
		n = int(rest)
	}
	if err := f.ReadMany(ctx, []Read{{Off: off, Buf: p[:n]}}); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// ReadMany fills every Read, fetching neighbouring ranges (at most
// MergeGap apart) with one request and independent ones in parallel,
// within the Fetcher's bound on concurrent requests. Reads may overlap.
// It blocks until all are filled or one fails.
func (f *Fetcher) ReadMany(ctx context.Context, reads []Read) error {
	type group struct {
		start, end int64
		reads      []int
	}
	idx := make([]int, 0, len(reads))
	for i, r := range reads {
		if r.Off < 0 || r.Off+int64(len(r.Buf)) > f.size {
			return fmt.Errorf("blob %s: range %d+%d outside its %d bytes", f.digest, r.Off, len(r.Buf), f.size)
		}
		if len(r.Buf) > 0 {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return reads[idx[a]].Off < reads[idx[b]].Off })
	var groups []*group
	for _, i := range idx {
		r := reads[i]
		end := r.Off + int64(len(r.Buf))
		if n := len(groups); n > 0 {
			g := groups[n-1]
			if f.opts.MergeGap >= 0 && r.Off <= g.end+f.opts.MergeGap && max(end, g.end)-g.start <= f.opts.MaxRequest {
				g.end = max(g.end, end)
				g.reads = append(g.reads, i)
				continue
			}
		}
		groups = append(groups, &group{start: r.Off, end: end, reads: []int{i}})
	}
	if len(groups) == 0 {
		return nil
	}
	fill := func(g *group) error {
		if len(g.reads) == 1 {
			r := reads[g.reads[0]]
			return f.fetch(ctx, r.Off, r.Buf)
		}
		buf := make([]byte, g.end-g.start)
		if err := f.fetch(ctx, g.start, buf); err != nil {
			return err
		}
		for _, i := range g.reads {
			copy(reads[i].Buf, buf[reads[i].Off-g.start:])
		}
		return nil
	}
	if len(groups) == 1 {
		return fill(groups[0])
	}
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fill(g); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	return first
}

// statusError is an HTTP answer that is neither 200 nor 206.
type statusError struct {
	code int
	url  string
	body string
}

func (e *statusError) Error() string {
	msg := fmt.Sprintf("%s answered %d %s", redactURL(e.url), e.code, http.StatusText(e.code))
	if e.body != "" {
		msg += ": " + e.body
	}
	switch {
	case e.code == http.StatusUnauthorized || e.code == http.StatusForbidden:
		msg += " (log in to the registry, or check the image's access rights)"
	case e.code == http.StatusNotFound:
		msg += " (the blob is gone from the registry: pull the image again)"
	}
	return msg
}

func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…" // signed storage URLs carry credentials in the query
	}
	return u
}

// errShortBody reports a response body that ended early.
var errShortBody = errors.New("response body ended early")

// errStaleRedirect reports a failure of a remembered redirect target; the
// request is sent to the registry again, without counting a retry.
var errStaleRedirect = errors.New("redirect target failed")

// target returns the URL to send a range request to, and whether it is a
// remembered redirect target.
func (f *Fetcher) target() (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.direct != "" && time.Since(f.directAt) < redirectTTL {
		return f.direct, true
	}
	f.direct = ""
	return f.url, false
}

func (f *Fetcher) setDirect(u string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.direct, f.directAt = u, time.Now()
}

func retryable(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.code == http.StatusTooManyRequests || se.code >= 500
	}
	if errors.Is(err, errShortBody) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errStalled) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return errors.Is(err, io.EOF)
}

// fetch fills buf with the bytes at off: one logical request, retried and
// resumed where a previous attempt stopped.
func (f *Fetcher) fetch(ctx context.Context, off int64, buf []byte) error {
	got, attempt, refreshed := 0, 0, false
	for got < len(buf) {
		if w := f.wholeCopy(); w != nil {
			return w.readAt(ctx, buf[got:], off+int64(got))
		}
		n, err := f.get(ctx, off+int64(got), buf[got:])
		got += n
		if err == nil || errors.Is(err, errStaleRedirect) {
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("fetching blob %s: %w", f.digest, ctx.Err())
		}
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusUnauthorized && !refreshed && f.opts.Refresh != nil {
			refreshed = true
			rt, rerr := f.opts.Refresh(ctx)
			if rerr != nil {
				return fmt.Errorf("fetching blob %s: refreshing credentials after 401: %w", f.digest, rerr)
			}
			f.mu.Lock()
			f.rt = rt
			f.mu.Unlock()
			continue
		}
		if !retryable(err) || attempt >= f.opts.Retries {
			if attempt > 0 {
				return fmt.Errorf("fetching bytes %d-%d of blob %s (after %d retries): %w", off, off+int64(len(buf))-1, f.digest, attempt, err)
			}
			return fmt.Errorf("fetching bytes %d-%d of blob %s: %w", off, off+int64(len(buf))-1, f.digest, err)
		}
		attempt++
		f.retries.Add(1)
		d := f.backoff(attempt)
		slog.Debug("retrying blob range", "stage", "fetch", "blob", f.digest.String(), "offset", off+int64(got), "attempt", attempt, "delay", d, "err", err)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return fmt.Errorf("fetching blob %s: %w", f.digest, ctx.Err())
		}
	}
	return nil
}

func (f *Fetcher) backoff(attempt int) time.Duration {
	d := f.opts.Backoff << (attempt - 1)
	if d > maxBackoff || d <= 0 {
		d = maxBackoff
	}
	return d
}

func (f *Fetcher) client() *http.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	// http.Client follows redirects (registries send blob GETs to their
	// storage) and drops the Authorization header when one leaves the host;
	// go-containerregistry's transports add credentials only for the
	// registry's own host.
	return &http.Client{Transport: f.rt}
}

// get sends one request for the bytes from off to fill buf and returns how
// many it got.
func (f *Fetcher) get(ctx context.Context, off int64, buf []byte) (int, error) {
	if a := f.opts.Activity; a != nil && !isBackground(ctx) {
		a.begin()
		defer a.end()
	}
	select {
	case f.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-f.sem }()
	end := off + int64(len(buf)) // exclusive
	target, direct := f.target()
	resp, err := f.request(ctx, target, fmt.Sprintf("bytes=%d-%d", off, end-1))
	if err != nil {
		if direct && ctx.Err() == nil {
			f.setDirect("")
			return 0, fmt.Errorf("%w: %w", errStaleRedirect, err)
		}
		return 0, err
	}
	if direct && resp.StatusCode != http.StatusPartialContent && resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		f.setDirect("")
		return 0, fmt.Errorf("%w: %d", errStaleRedirect, resp.StatusCode)
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		defer resp.Body.Close()
		if u := resp.Request.URL.String(); !direct && u != f.url {
			f.setDirect(u)
		}
		start, last, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start > off || last < end-1 {
			return 0, fmt.Errorf("%s answered bytes %q to a request for bytes %d-%d", redactURL(f.url), resp.Header.Get("Content-Range"), off, end-1)
		}
		if total >= 0 && total != f.size {
			return 0, fmt.Errorf("%s: blob has %d bytes, the manifest says %d", redactURL(f.url), total, f.size)
		}
		if start < off {
			if _, err := io.CopyN(io.Discard, resp.Body, off-start); err != nil {
				return 0, fmt.Errorf("%w: %w", errShortBody, err)
			}
		}
		n, err := io.ReadFull(resp.Body, buf)
		f.bytes.Add(int64(n))
		if err != nil {
			return n, fmt.Errorf("%w after %d of %d bytes: %w", errShortBody, n, len(buf), err)
		}
		return n, nil
	case http.StatusOK:
		// The registry ignored Range and sends the whole blob: keep it as a
		// local copy, and serve this read and every later one from it.
		f.ignored.Add(1)
		resp.Body.(*watchedBody).detach() // the download outlives this read
		w := f.startWhole(resp)
		if err := w.readAt(ctx, buf, off); err != nil {
			return 0, err
		}
		return len(buf), nil
	default:
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, &statusError{code: resp.StatusCode, url: resp.Request.URL.String(), body: strings.TrimSpace(string(b))}
	}
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*",
// giving -1).
func parseContentRange(s string) (start, end, total int64, ok bool) {
	s, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	start, err1 = strconv.ParseInt(a, 10, 64)
	end, err2 = strconv.ParseInt(b, 10, 64)
	total = -1
	if tot != "*" {
		total, err3 = strconv.ParseInt(tot, 10, 64)
	}
	return start, end, total, err1 == nil && err2 == nil && err3 == nil && start <= end
}

// settle waits, when the Fetcher is making a local copy of the whole blob,
// until the copy is complete and its digest checked. A copy that fails its
// digest is dropped, so the next read fetches the blob again: a caller
// that found bad bytes calls settle before fetching them again.
func (f *Fetcher) settle(ctx context.Context) error {
	w := f.wholeCopy()
	if w == nil {
		return nil
	}
	for {
		w.mu.Lock()
		done, err, ch := w.done, w.err, w.changed
		w.mu.Unlock()
		if done || err != nil {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fetching blob %s: %w", f.digest, ctx.Err())
		}
	}
}

// wholeCopy returns the local copy of the blob, if the Fetcher has one.
func (f *Fetcher) wholeCopy() *wholeBlob {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.whole
}

// startWhole makes the local copy of the blob from resp, a 200 answer with
// the whole body, unless one is already being made (then resp is dropped).
func (f *Fetcher) startWhole(resp *http.Response) *wholeBlob {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.whole != nil {
		resp.Body.Close()
		return f.whole
	}
	w := &wholeBlob{f: f, changed: make(chan struct{})}
	file, err := os.CreateTemp(f.opts.TempDir, "dabba-blob-*")
	if err == nil {
		os.Remove(file.Name()) // the open descriptor keeps it while needed
		w.file = file
	} else {
		w.err = fmt.Errorf("blob %s: the registry ignores Range requests and the local copy cannot be made: %w", f.digest, err)
		close(w.changed)
		resp.Body.Close()
		return w // not kept: the next read tries again
	}
	f.whole = w
	f.wholeN.Store(1)
	slog.Debug("registry ignores range requests, fetching the whole blob", "stage", "fetch", "blob", f.digest.String())
	go w.download(resp)
	return w
}

// wholeBlob is a local copy of a blob, filled in the background by one
// download; reads wait until the bytes they need have arrived.
type wholeBlob struct {
	f    *Fetcher
	file *os.File

	mu      sync.Mutex
	have    int64         // bytes written so far
	err     error         // set when the download failed for good
	done    bool          // all bytes written and the digest checked
	changed chan struct{} // closed (and replaced) when have, err or done change
}

func (w *wholeBlob) close() {
	if w.file != nil {
		w.file.Close()
	}
}

func (w *wholeBlob) notify() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// readAt waits for [off, off+len(p)) and reads it.
func (w *wholeBlob) readAt(ctx context.Context, p []byte, off int64) error {
	end := off + int64(len(p))
	for {
		w.mu.Lock()
		have, err, ch := w.have, w.err, w.changed
		w.mu.Unlock()
		if have >= end {
			_, err := w.file.ReadAt(p, off)
			if err != nil {
				return fmt.Errorf("local copy of blob %s: %w", w.f.digest, err)
			}
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fetching blob %s: %w", w.f.digest, ctx.Err())
		}
	}
}

// download writes resp's body, then resumes with new requests when the
// body breaks, until the whole blob is local; then it checks the digest.
func (w *wholeBlob) download(resp *http.Response) {
	f := w.f
	h := sha256.New()
	buf := make([]byte, 256<<10)
	attempt := 0
	var err error
	for {
		if resp != nil {
			err = w.copyBody(resp.Body, h, buf)
			resp.Body.Close()
			resp = nil
			if err == nil {
				break
			}
		}
		if f.ctx.Err() != nil || attempt >= f.opts.Retries {
			break
		}
		attempt++
		f.retries.Add(1)
		select {
		case <-time.After(f.backoff(attempt)):
		case <-f.ctx.Done():
		}
		resp, err = w.resume()
	}
	if err == nil && f.digest.Algorithm == "sha256" && hex.EncodeToString(h.Sum(nil)) != f.digest.Hex {
		err = fmt.Errorf("%w: blob %s: the whole blob sent by %s has digest sha256:%x", ErrVerify, f.digest, redactURL(f.url), h.Sum(nil))
	}
	w.mu.Lock()
	if err != nil {
		w.err = fmt.Errorf("fetching the whole blob %s (the registry ignores Range requests): %w", f.digest, err)
	} else {
		w.done = true
	}
	w.notify()
	w.mu.Unlock()
	if err != nil {
		// Forget the copy so that a later read starts afresh, twice at most.
		f.mu.Lock()
		if f.whole == w {
			f.wholeBad++
			if f.wholeBad < 2 {
				f.whole = nil
			}
		}
		f.mu.Unlock()
	}
}

func (w *wholeBlob) copyBody(body io.Reader, h io.Writer, buf []byte) error {
	for {
		w.mu.Lock()
		have := w.have
		w.mu.Unlock()
		if have >= w.f.size {
			// Anything after the blob's size is not part of it.
			if n, _ := body.Read(buf[:1]); n > 0 {
				return fmt.Errorf("%s sent more than the blob's %d bytes", redactURL(w.f.url), w.f.size)
			}
			return nil
		}
		n, err := body.Read(buf[:min(int64(len(buf)), w.f.size-have)])
		if n > 0 {
			w.f.bytes.Add(int64(n))
			if _, werr := w.file.WriteAt(buf[:n], have); werr != nil {
				return fmt.Errorf("writing the local copy: %w", werr)
			}
			h.Write(buf[:n])
			w.mu.Lock()
			w.have += int64(n)
			w.notify()
			w.mu.Unlock()
		}
		if err == io.EOF {
			if have+int64(n) < w.f.size {
				return fmt.Errorf("%w at byte %d of %d", errShortBody, have+int64(n), w.f.size)
			}
			continue
		}
		if err != nil {
			return err
		}
	}
}

// resume asks for the rest of the blob. A registry that ignores Range sends
// it all again; the bytes already kept are skipped.
func (w *wholeBlob) resume() (*http.Response, error) {
	f := w.f
	w.mu.Lock()
	have := w.have
	w.mu.Unlock()
	resp, err := f.request(f.ctx, f.url, fmt.Sprintf("bytes=%d-", have))
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if _, err := io.CopyN(io.Discard, resp.Body, have); err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("%w: %w", errShortBody, err)
		}
		f.bytes.Add(have)
		return resp, nil
	case http.StatusPartialContent:
		if start, _, _, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && start == have {
			return resp, nil
		}
		resp.Body.Close()
		return nil, fmt.Errorf("%s answered bytes %q to a request for bytes %d-", redactURL(f.url), resp.Header.Get("Content-Range"), have)
	default:
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, &statusError{code: resp.StatusCode, url: resp.Request.URL.String(), body: strings.TrimSpace(string(b))}
	}
}

// errStalled reports a response that received nothing for StallTimeout.
var errStalled = errors.New("no data received within the stall timeout")

// request sends a GET of url with the Range header rng. Its context ends
// with ctx, with the Fetcher (Close), or when nothing arrives for
// StallTimeout (then errors wrap errStalled). The response's Body is a
// *watchedBody: each read pushes the stall deadline back, Close releases
// the request.
func (f *Fetcher) request(ctx context.Context, url, rng string) (*http.Response, error) {
	rctx, cancel := context.WithCancelCause(f.ctx)
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	timeout := f.opts.StallTimeout
	timer := time.AfterFunc(timeout, func() { cancel(errStalled) })
	release := func() {
		stop()
		timer.Stop()
		cancel(nil)
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		release()
		return nil, fmt.Errorf("blob %s: %w", f.digest, err)
	}
	req.Header.Set("Range", rng)
	f.requests.Add(1)
	resp, err := f.client().Do(req)
	if err != nil {
		release()
		if errors.Is(context.Cause(rctx), errStalled) {
			return nil, fmt.Errorf("%s: %w", redactURL(url), errStalled)
		}
		return nil, err
	}
	resp.Body = &watchedBody{rc: resp.Body, rctx: rctx, timer: timer, timeout: timeout, stop: stop, release: release}
	return resp, nil
}

// watchedBody is a response body under a stall timer.
type watchedBody struct {
	rc      io.ReadCloser
	rctx    context.Context
	timer   *time.Timer
	timeout time.Duration
	stop    func() bool // detaches from the caller's context
	release func()
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.timer.Reset(b.timeout)
	}
	if err != nil && err != io.EOF && errors.Is(context.Cause(b.rctx), errStalled) {
		err = fmt.Errorf("%w: %w", errStalled, err)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.rc.Close()
	b.release()
	return err
}

// detach makes the request independent of the context of the read that
// sent it: it then ends only with the Fetcher, a stall or Close.
func (b *watchedBody) detach() { b.stop() }
