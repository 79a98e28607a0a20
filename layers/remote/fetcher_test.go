package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/dabba/dabba/internal/testenv"
)

func TestFetcherReadsRanges(t *testing.T) {
	data := text(1, 3<<20)
	for _, reg := range registries(t) {
		t.Run(reg.name, func(t *testing.T) {
			u, d := pushBlob(t, reg.host, "fetch/ranges", data)
			f, err := NewFetcher(nil, u, d, int64(len(data)), fastRetry())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r := rand.New(rand.NewPCG(2, 3))
			var want int64
			for i := 0; i < 20; i++ {
				off := r.Int64N(int64(len(data)))
				n := min(r.IntN(200<<10)+1, len(data)-int(off))
				p := make([]byte, n)
				if _, err := f.ReadAt(p, off); err != nil {
					t.Fatalf("ReadAt(%d, %d): %v", n, off, err)
				}
				if !bytes.Equal(p, data[off:off+int64(n)]) {
					t.Fatalf("ReadAt(%d, %d): wrong bytes", n, off)
				}
				want += int64(n)
			}
			// The tail, through io.ReaderAt's contract.
			p := make([]byte, 100)
			n, err := f.ReadAt(p, int64(len(data))-10)
			if n != 10 || err != io.EOF || !bytes.Equal(p[:10], data[len(data)-10:]) {
				t.Fatalf("ReadAt at the end: %d, %v", n, err)
			}
			st := f.Stats()
			if st.Requests != 21 || st.BytesFetched != want+10 || st.Retries != 0 || st.WholeBlob != 0 {
				t.Fatalf("stats %+v, want 21 requests of %d bytes", st, want+10)
			}
		})
	}
}

func TestFetcherCoalesces(t *testing.T) {
	data := text(4, 1<<20)
	host := testenvRegistry(t)
	_, d := pushBlob(t, host, "fetch/coalesce", data)
	fp := newFaultProxy(t, host)
	f, err := NewFetcher(nil, fp.blobURL("fetch/coalesce", d), d, int64(len(data)), &Options{MergeGap: 4096})
	if err != nil {
		t.Fatal(err)
	}
	// Three neighbours (gaps of 0 and 1000 bytes) make one request; one far
	// away makes another; the two overlapping ones share the first.
	reads := []Read{
		{Off: 500_000, Buf: make([]byte, 10)},
		{Off: 1000, Buf: make([]byte, 1000)},
		{Off: 2000, Buf: make([]byte, 1000)},
		{Off: 4000, Buf: make([]byte, 3000)},
		{Off: 1500, Buf: make([]byte, 100)},
	}
	if err := f.ReadMany(context.Background(), reads); err != nil {
		t.Fatal(err)
	}
	for _, r := range reads {
		if !bytes.Equal(r.Buf, data[r.Off:r.Off+int64(len(r.Buf))]) {
			t.Fatalf("read at %d: wrong bytes", r.Off)
		}
	}
	n, ranges := fp.gets()
	if n != 2 || st(f).BytesFetched != 6000+10 {
		t.Fatalf("%d requests (%v), %d bytes; want 2 requests of 6010 bytes", n, ranges, st(f).BytesFetched)
	}
	for _, rg := range ranges {
		if strings.Contains(rg, ",") {
			t.Fatalf("multi-range request %q", rg)
		}
	}
}

func st(f *Fetcher) Stats { return f.Stats() }

// testenvRegistry starts only the in-process registry, for tests of the
// client's own behaviour.
func testenvRegistry(t *testing.T) string {
	return testenv.Registry(t)
}

func TestFetcherFaults(t *testing.T) {
	data := text(5, 2<<20)
	for _, reg := range registries(t) {
		t.Run(reg.name, func(t *testing.T) {
			_, d := pushBlob(t, reg.host, "fetch/faults", data)
			read := func(t *testing.T, f *Fetcher, off, n int64) error {
				p := make([]byte, n)
				if _, err := f.ReadAt(p, off); err != nil {
					return err
				}
				if !bytes.Equal(p, data[off:off+n]) {
					t.Fatalf("wrong bytes at %d+%d", off, n)
				}
				return nil
			}
			newF := func(t *testing.T, fp *faultProxy, o *Options) *Fetcher {
				f, err := NewFetcher(nil, fp.blobURL("fetch/faults", d), d, int64(len(data)), o)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				return f
			}

			t.Run("ignores-range", func(t *testing.T) {
				fp := newFaultProxy(t, reg.host)
				fp.set(func(fp *faultProxy) { fp.ignoreRange = true })
				f := newF(t, fp, fastRetry())
				for _, off := range []int64{1 << 20, 10, 2<<20 - 100, 300_000} {
					if err := read(t, f, off, 100); err != nil {
						t.Fatal(err)
					}
				}
				s := f.Stats()
				if s.Requests != 1 || s.RangeIgnored != 1 || s.WholeBlob != 1 {
					t.Fatalf("stats %+v: want one request, then the local copy", s)
				}
			})

			t.Run("rejects-multi-range", func(t *testing.T) {
				fp := newFaultProxy(t, reg.host)
				fp.set(func(fp *faultProxy) { fp.rejectMulti = true })
				f := newF(t, fp, &Options{MergeGap: 1000})
				reads := []Read{{Off: 0, Buf: make([]byte, 10)}, {Off: 1 << 20, Buf: make([]byte, 10)}, {Off: 100, Buf: make([]byte, 10)}}
				if err := f.ReadMany(context.Background(), reads); err != nil {
					t.Fatal(err)
				}
				for _, r := range reads {
					if !bytes.Equal(r.Buf, data[r.Off:r.Off+10]) {
						t.Fatal("wrong bytes")
					}
				}
			})

			t.Run("cuts-connections", func(t *testing.T) {
				fp := newFaultProxy(t, reg.host)
				fp.set(func(fp *faultProxy) { fp.cut = 3 })
				f := newF(t, fp, fastRetry())
				if err := read(t, f, 1000, 1<<20); err != nil {
					t.Fatal(err)
				}
				// Each attempt resumed where the last stopped.
				if s := f.Stats(); s.Retries != 3 || s.BytesFetched != 1<<20 {
					t.Fatalf("stats %+v: want 3 retries, no byte fetched twice", s)
				}
			})

			t.Run("5xx-then-ok", func(t *testing.T) {
				fp := newFaultProxy(t, reg.host)
				fp.set(func(fp *faultProxy) { fp.fail = 2 })
				f := newF(t, fp, fastRetry())
				if err := read(t, f, 5, 5000); err != nil {
					t.Fatal(err)
				}
				if s := f.Stats(); s.Retries != 2 {
					t.Fatalf("stats %+v: want 2 retries", s)
				}
			})

			t.Run("5xx-forever", func(t *testing.T) {
				fp := newFaultProxy(t, reg.host)
				fp.set(func(fp *faultProxy) { fp.fail = -1 })
				f := newF(t, fp, &Options{Backoff: 1, Retries: 3})
				err := read(t, f, 5, 5000)
				if err == nil || !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), "503") {
					t.Fatalf("error %v: want a 503 naming the blob", err)
				}
				if n, _ := fp.gets(); n != 4 {
					t.Fatalf("%d requests, want 1 + 3 retries", n)
				}
			})

			t.Run("not-found", func(t *testing.T) {
				fp := newFaultProxy(t, reg.host)
				other := d
				other.Hex = strings.Repeat("1", 64)
				f, err := NewFetcher(nil, fp.blobURL("fetch/faults", other), other, 100, fastRetry())
				if err != nil {
					t.Fatal(err)
				}
				_, err = f.ReadAt(make([]byte, 10), 0)
				if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "pull the image again") {
					t.Fatalf("error %v: want a 404 saying what to do", err)
				}
				if n, _ := fp.gets(); n != 1 {
					t.Fatalf("%d requests: a 404 is not retried", n)
				}
			})

			t.Run("refreshes-auth", func(t *testing.T) {
				fp := newFaultProxy(t, reg.host)
				fp.set(func(fp *faultProxy) { fp.unauthorized = -1 })
				refreshes := 0
				f, err := NewFetcher(bearer{"stale"}, fp.blobURL("fetch/faults", d), d, int64(len(data)), &Options{
					Refresh: func(ctx context.Context) (http.RoundTripper, error) {
						refreshes++
						return bearer{"good"}, nil
					},
				})
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < 3; i++ {
					if err := read(t, f, int64(i)*1000, 10); err != nil {
						t.Fatal(err)
					}
				}
				if refreshes != 1 {
					t.Fatalf("%d refreshes, want 1", refreshes)
				}
				// Without a hook, a 401 is an error saying what to do.
				g := newF(t, fp, fastRetry())
				err = read(t, g, 0, 10)
				if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "log in") {
					t.Fatalf("error %v: want a 401 saying to log in", err)
				}
			})

			t.Run("stalls", func(t *testing.T) {
				fp := newFaultProxy(t, reg.host)
				fp.set(func(fp *faultProxy) { fp.stall = true })
				f := newF(t, fp, &Options{StallTimeout: 20 * time.Millisecond, Retries: 1, Backoff: time.Millisecond})
				err := read(t, f, 0, 1000)
				if !errors.Is(err, errStalled) || !strings.Contains(err.Error(), d.String()) {
					t.Fatalf("error %v: want a stall naming the blob", err)
				}
				if n, _ := fp.gets(); n != 2 {
					t.Fatalf("%d requests, want 1 + 1 retry", n)
				}
			})

			t.Run("whole-blob-outlives-reader", func(t *testing.T) {
				// The read that met a range-ignoring registry gives up; the
				// download it started goes on and serves the next read.
				fp := newFaultProxy(t, reg.host)
				fp.set(func(fp *faultProxy) { fp.ignoreRange = true })
				f := newF(t, fp, fastRetry())
				ctx, cancel := context.WithCancel(context.Background())
				if _, err := f.ReadAtContext(ctx, make([]byte, 10), 0); err != nil {
					t.Fatal(err)
				}
				cancel()
				if err := read(t, f, int64(len(data))-5000, 5000); err != nil {
					t.Fatal(err)
				}
				if s := f.Stats(); s.Requests != 1 || s.Retries != 0 {
					t.Fatalf("stats %+v: want one request", s)
				}
			})

			t.Run("cancel", func(t *testing.T) {
				fp := newFaultProxy(t, reg.host)
				fp.set(func(fp *faultProxy) { fp.stall = true })
				f := newF(t, fp, fastRetry())
				ctx, cancel := context.WithCancel(context.Background())
				errc := make(chan error)
				go func() {
					_, err := f.ReadAtContext(ctx, make([]byte, 1000), 0)
					errc <- err
				}()
				for {
					if n, _ := fp.gets(); n > 0 {
						break
					}
					time.Sleep(time.Millisecond)
				}
				cancel()
				if err := <-errc; !errors.Is(err, context.Canceled) {
					t.Fatalf("error %v, want context.Canceled", err)
				}
			})
		})
	}
}

// TestFetcherRedirect follows a registry that sends blob GETs to separate
// storage, as registries backed by object stores do, goes straight to the
// storage URL for the next ranges, and back to the registry when that URL
// stops working (a signature expired).
func TestFetcherRedirect(t *testing.T) {
	data := text(6, 500_000)
	host := testenvRegistry(t)
	_, d := pushBlob(t, host, "fetch/redirect", data)
	fp := newFaultProxy(t, host) // the storage's backend
	var mu sync.Mutex
	regHits, expire := 0, 0
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		exp := take(&expire)
		mu.Unlock()
		if exp {
			http.Error(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", http.StatusForbidden)
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, fp.blobURL("fetch/redirect", d), nil)
		req.Header.Set("Range", r.Header.Get("Range"))
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(storage.Close)
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		regHits++
		mu.Unlock()
		http.Redirect(w, r, storage.URL+"/blob?X-Signature=secret", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(reg.Close)
	f, err := NewFetcher(bearer{"good"}, reg.URL+"/v2/fetch/redirect/blobs/"+d.String(), d, int64(len(data)), fastRetry())
	if err != nil {
		t.Fatal(err)
	}
	read := func(off int64) {
		t.Helper()
		p := make([]byte, 1234)
		if _, err := f.ReadAt(p, off); err != nil || !bytes.Equal(p, data[off:off+1234]) {
			t.Fatalf("read through a redirect: %v", err)
		}
	}
	for _, off := range []int64{4321, 100_000, 7} {
		read(off)
	}
	hits := func() int {
		mu.Lock()
		defer mu.Unlock()
		return regHits
	}
	if n, _ := fp.gets(); n != 3 || hits() != 1 {
		t.Fatalf("%d registry and %d storage requests, want 1 and 3", hits(), n)
	}
	mu.Lock()
	expire = 1
	mu.Unlock()
	read(200_000)
	if n, _ := fp.gets(); n != 4 || hits() != 2 || f.Stats().Retries != 0 {
		t.Fatalf("after expiry: %d registry and %d storage requests, %d retries; want 2, 4, 0", hits(), n, f.Stats().Retries)
	}
}

func TestFetcherErrors(t *testing.T) {
	if _, err := NewFetcher(nil, "ftp://x/blob", hashOf("x"), 10, nil); err == nil || !strings.Contains(err.Error(), "not http") {
		t.Fatalf("ftp url: %v", err)
	}
	if _, err := NewFetcher(nil, "http://x/blob", hashOf("x"), -1, nil); err == nil {
		t.Fatal("negative size accepted")
	}
	f, _ := NewFetcher(nil, "http://127.0.0.1:1/blob", hashOf("x"), 10, nil)
	if _, err := f.ReadAt(make([]byte, 1), -1); err == nil {
		t.Fatal("negative offset accepted")
	}
	if n, err := f.ReadAt(make([]byte, 1), 10); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v", n, err)
	}
	if err := f.ReadMany(context.Background(), []Read{{Off: 5, Buf: make([]byte, 6)}}); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("read past the end: %v", err)
	}
	for _, c := range []struct {
		in   string
		a, b int64
		tot  int64
		ok   bool
	}{
		{"bytes 0-9/10", 0, 9, 10, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{"bytes 9-5/10", 0, 0, 0, false},
		{"0-9/10", 0, 0, 0, false},
		{"bytes 0-x/10", 0, 0, 0, false},
	} {
		a, b, tot, ok := parseContentRange(c.in)
		if ok != c.ok || ok && (a != c.a || b != c.b || tot != c.tot) {
			t.Errorf("parseContentRange(%q) = %d %d %d %v", c.in, a, b, tot, ok)
		}
	}
}

func hashOf(s string) v1.Hash {
	sum := sha256.Sum256([]byte(s))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func TestFetcherDownload(t *testing.T) {
	data := text(8, 3<<20+12345)
	host := testenvRegistry(t)
	_, d := pushBlob(t, host, "fetch/download", data)
	for _, c := range []struct {
		name  string
		fault func(*faultProxy)
	}{
		{"plain", func(*faultProxy) {}},
		{"ignores-range", func(fp *faultProxy) { fp.ignoreRange = true }},
		{"cuts-connections", func(fp *faultProxy) { fp.cut = 2 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			fp := newFaultProxy(t, host)
			fp.set(c.fault)
			f, err := NewFetcher(nil, fp.blobURL("fetch/download", d), d, int64(len(data)), &Options{MaxRequest: 1 << 20, Backoff: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var buf bytes.Buffer
			if err := f.Download(context.Background(), &buf); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), data) {
				t.Fatal("wrong bytes")
			}
			t.Logf("%+v", f.Stats())
		})
	}
	t.Run("404", func(t *testing.T) {
		other := hashOf("missing")
		f, _ := NewFetcher(nil, "http://"+host+"/v2/fetch/download/blobs/"+other.String(), other, 100, nil)
		if err := f.Download(context.Background(), io.Discard); err == nil || !strings.Contains(err.Error(), other.String()) {
			t.Fatalf("error %v: want one naming the blob", err)
		}
	})
}

// TestFetcherTokenAuth reads through go-containerregistry's transport from
// a registry that demands bearer tokens, as store wires it.
func TestFetcherTokenAuth(t *testing.T) {
	fr := testenv.NewFaultRegistry(t)
	data := text(9, 300_000)
	_, d := pushBlob(t, fr.Host, "fetch/auth", data)
	fr.RequireToken("", "")
	repo, err := name.NewRepository(fr.Host+"/fetch/auth", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	newRT := func(ctx context.Context) (http.RoundTripper, error) {
		return transport.NewWithContext(ctx, repo.Registry, authn.Anonymous, http.DefaultTransport, []string{repo.Scope(transport.PullScope)})
	}
	rt, err := newRT(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u := fmt.Sprintf("http://%s/v2/fetch/auth/blobs/%s", fr.Host, d)
	f, err := NewFetcher(rt, u, d, int64(len(data)), &Options{Refresh: newRT})
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1000)
	if _, err := f.ReadAt(p, 5000); err != nil || !bytes.Equal(p, data[5000:6000]) {
		t.Fatalf("read with a token: %v", err)
	}
	// Without credentials the registry's 401 is reported as such.
	g, _ := NewFetcher(nil, u, d, int64(len(data)), nil)
	if _, err := g.ReadAt(p, 0); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("read without a token: %v", err)
	}
}
