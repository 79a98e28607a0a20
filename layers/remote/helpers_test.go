package remote

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/internal/testenv"
)

// registry is a real registry the tests push to.
type registry struct {
	name string
	host string
}

// registries starts both real registries: go-containerregistry's in
// process and Debian's docker-registry.
func registries(t *testing.T) []registry {
	t.Helper()
	return []registry{
		{"ggcr", testenv.Registry(t)},
		{"docker-registry", testenv.DockerRegistry(t)},
	}
}

// pushBlob pushes data as the only layer of an image to host/repo and
// returns the blob's URL and digest.
func pushBlob(t testing.TB, host, repo string, data []byte) (string, v1.Hash) {
	t.Helper()
	sum := sha256.Sum256(data)
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	diff := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
	img := testenv.ImageOfLayers(t, testenv.RawLayer(data, diff))
	testenv.Push(t, img, host, repo+":latest")
	return fmt.Sprintf("http://%s/v2/%s/blobs/%s", host, repo, d), d
}

// text returns n bytes of compressible pseudo-random text (about 3:1 with
// gzip), the same for the same seed.
func text(seed uint64, n int) []byte {
	words := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
		"india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "\n", "0", "1", "2"}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, 0, n+16)
	for len(b) < n {
		w := words[r.IntN(len(words))]
		b = append(b, w...)
		if r.IntN(4) == 0 {
			b = append(b, byte('a'+r.IntN(26)), byte('a'+r.IntN(26)))
		}
		b = append(b, ' ')
	}
	return b[:n]
}

// faultProxy is a reverse proxy in front of a real registry that breaks
// blob responses in the ways registries and networks do. Counters say how
// many of the next responses to break; -1 breaks all.
type faultProxy struct {
	URL string // http://127.0.0.1:PORT

	mu           sync.Mutex
	ignoreRange  bool // drop Range: the registry answers 200 with the whole blob
	rejectMulti  bool // 416 for a Range with several ranges
	fail         int  // answer 503
	cut          int  // send half the body, then close the connection
	corrupt      int  // flip a byte in the body
	corruptTail  bool // flip the byte 100 bytes before the end of the body
	unauthorized int  // 401 unless "Authorization: Bearer good"
	stall        bool // send the headers, then wait for the client to give up
	ranges       []string
	blobGets     int
}

func newFaultProxy(t testing.TB, upstream string) *faultProxy {
	t.Helper()
	fp := &faultProxy{}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream})
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		if !strings.Contains(resp.Request.URL.Path, "/blobs/") || resp.Request.Method != http.MethodGet {
			return nil
		}
		fp.mu.Lock()
		defer fp.mu.Unlock()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
			return nil
		}
		if take(&fp.corrupt) {
			at := resp.ContentLength / 2
			if fp.corruptTail {
				at = resp.ContentLength - 100
			}
			resp.Body = &flipReader{r: resp.Body, at: at}
		}
		if take(&fp.cut) {
			resp.Body = &cutReader{r: resp.Body, left: max(1, resp.ContentLength/2)}
		}
		return nil
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		blob := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/")
		if !blob {
			rp.ServeHTTP(w, r)
			return
		}
		fp.mu.Lock()
		fp.blobGets++
		rg := r.Header.Get("Range")
		fp.ranges = append(fp.ranges, rg)
		if fp.ignoreRange {
			r.Header.Del("Range")
		}
		multi := fp.rejectMulti && strings.Contains(rg, ",")
		fail := take(&fp.fail)
		unauth := fp.unauthorized != 0 && r.Header.Get("Authorization") != "Bearer good"
		if unauth {
			take(&fp.unauthorized)
		}
		stall := fp.stall
		fp.mu.Unlock()
		switch {
		case multi:
			http.Error(w, "multiple ranges not supported", http.StatusRequestedRangeNotSatisfiable)
		case fail:
			http.Error(w, `{"errors":[{"code":"UNAVAILABLE"}]}`, http.StatusServiceUnavailable)
		case unauth:
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://127.0.0.1/token"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
		case stall:
			w.Header().Set("Content-Length", "1000")
			w.Header().Set("Content-Range", "bytes 0-999/*")
			w.WriteHeader(http.StatusPartialContent)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
		default:
			rp.ServeHTTP(w, r)
		}
	})
	srv := httptest.NewServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(srv.Close)
	fp.URL = srv.URL
	return fp
}

// take consumes one unit of a fault counter (-1 never runs out).
func take(n *int) bool {
	if *n == 0 {
		return false
	}
	if *n > 0 {
		*n--
	}
	return true
}

func (fp *faultProxy) set(f func(fp *faultProxy)) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	f(fp)
}

func (fp *faultProxy) gets() (int, []string) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return fp.blobGets, append([]string(nil), fp.ranges...)
}

// blobURL is the URL of blob d of repo through the proxy.
func (fp *faultProxy) blobURL(repo string, d v1.Hash) string {
	return fmt.Sprintf("%s/v2/%s/blobs/%s", fp.URL, repo, d)
}

type flipReader struct {
	r   io.ReadCloser
	pos int64
	at  int64
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.at >= f.pos && f.at < f.pos+int64(n) {
		p[f.at-f.pos] ^= 0x20
	}
	f.pos += int64(n)
	return n, err
}
func (f *flipReader) Close() error { return f.r.Close() }

// cutReader fails after left bytes; the reverse proxy then aborts the
// response, closing the connection mid-body.
type cutReader struct {
	r    io.ReadCloser
	left int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("connection cut by the test proxy")
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}
func (c *cutReader) Close() error { return c.r.Close() }

// bearer is a transport adding a fixed Authorization header.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// fastRetry keeps tests quick: short backoff.
func fastRetry() *Options {
	return &Options{Backoff: time.Millisecond}
}
