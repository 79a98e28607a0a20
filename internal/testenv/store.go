package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/dabba/dabba/internal/imagebuild"
	"github.com/dabba/dabba/layers/layertest"
)

// Fault is a way a FaultRegistry breaks a blob response.
type Fault int

// Faults a FaultRegistry injects into GETs of the chosen blob.
const (
	NoFault    Fault = iota
	Fault500         // answer 500 Internal Server Error
	FaultDrop        // send the headers and half the bytes, then close the connection
	FaultWrong       // send bytes that do not match the digest (same length)
	FaultStall       // send half the bytes, then wait until Release or the test's end
)

// FaultRegistry is a real in-process registry (go-containerregistry's
// pkg/registry) behind a handler that breaks the responses for one blob on
// demand and records the Range headers it sees.
type FaultRegistry struct {
	Host string

	inner http.Handler

	mu      sync.Mutex
	fault   Fault
	digest  string
	ranges  []string
	gets    map[string]int
	stalled chan struct{} // closed when a FaultStall response has sent its half
	release chan struct{}

	tokenAuth  bool   // /v2/ needs a bearer token from /token
	user, pass string // credentials /token wants; "" for anonymous tokens
}

// RequireToken makes the registry demand a bearer token (the token flow of
// Docker Hub and most registries) from its /token endpoint, which hands one
// out anonymously when user is "", else only for basic credentials
// user:pass.
func (fr *FaultRegistry) RequireToken(user, pass string) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fr.tokenAuth, fr.user, fr.pass = true, user, pass
}

// authorize answers the token endpoint and checks tokens; it reports
// whether the request may go on.
func (fr *FaultRegistry) authorize(w http.ResponseWriter, r *http.Request) bool {
	fr.mu.Lock()
	on, user, pass := fr.tokenAuth, fr.user, fr.pass
	fr.mu.Unlock()
	if r.URL.Path == "/token" {
		u, p, ok := r.BasicAuth()
		if user != "" && (!ok || u != user || p != pass) {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`)
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"token":"tok-`+u+`"}`)
		return false
	}
	if !on {
		return true
	}
	if r.Header.Get("Authorization") == "Bearer tok-"+user {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+fr.Host+`/token",service="test"`)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
	return false
}

// NewFaultRegistry starts a FaultRegistry on 127.0.0.1.
func NewFaultRegistry(t testing.TB) *FaultRegistry {
	t.Helper()
	return newFaultRegistry(t, registry.New(registry.Logger(log.New(io.Discard, "", 0))))
}

// NewFaultProxy starts a FaultRegistry on 127.0.0.1 that forwards to the
// registry at host (e.g. DockerRegistry's), to break or observe its
// responses.
func NewFaultProxy(t testing.TB, host string) *FaultRegistry {
	t.Helper()
	p := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: host})
	p.ErrorLog = log.New(io.Discard, "", 0)
	return newFaultRegistry(t, p)
}

func newFaultRegistry(t testing.TB, inner http.Handler) *FaultRegistry {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fr := &FaultRegistry{
		Host:    ln.Addr().String(),
		inner:   inner,
		gets:    map[string]int{},
		stalled: make(chan struct{}),
		release: make(chan struct{}),
	}
	srv := &http.Server{Handler: fr, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() {
		fr.Release()
		srv.Close()
	})
	return fr
}

// SetFault makes GETs of blob digest ("sha256:...") fail with f (NoFault:
// serve it normally again).
func (fr *FaultRegistry) SetFault(f Fault, digest string) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fr.fault, fr.digest = f, digest
}

// Ranges returns the Range headers of the blob GETs seen so far.
func (fr *FaultRegistry) Ranges() []string {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return append([]string(nil), fr.ranges...)
}

// BlobGets returns how many times blob digest was fetched.
func (fr *FaultRegistry) BlobGets(digest string) int {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return fr.gets[digest]
}

// Stalled is closed once a FaultStall response has sent half the blob.
func (fr *FaultRegistry) Stalled() <-chan struct{} { return fr.stalled }

// Release lets stalled responses end (by closing their connections).
func (fr *FaultRegistry) Release() {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	select {
	case <-fr.release:
	default:
		close(fr.release)
	}
}

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[a-f0-9]{64})$`)

func (fr *FaultRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !fr.authorize(w, r) {
		return
	}
	m := blobPath.FindStringSubmatch(r.URL.Path)
	if r.Method != http.MethodGet || m == nil {
		fr.inner.ServeHTTP(w, r)
		return
	}
	fr.mu.Lock()
	fr.gets[m[1]]++
	if rg := r.Header.Get("Range"); rg != "" {
		fr.ranges = append(fr.ranges, rg)
	}
	fault := NoFault
	if m[1] == fr.digest {
		fault = fr.fault
	}
	fr.mu.Unlock()
	if fault == NoFault {
		fr.inner.ServeHTTP(w, r)
		return
	}
	if fault == Fault500 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}`)
		return
	}
	rec := httptest.NewRecorder()
	fr.inner.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	if fault == FaultWrong {
		body = bytes.Clone(body)
		for i := range body {
			body[i] ^= 0x5a
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
		return
	}
	w.WriteHeader(rec.Code)
	w.Write(body[:len(body)/2])
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if fault == FaultStall {
		fr.mu.Lock()
		select {
		case <-fr.stalled:
		default:
			close(fr.stalled)
		}
		fr.mu.Unlock()
		select {
		case <-fr.release:
		case <-r.Context().Done():
		}
	}
	// Abort: the server closes the connection mid-body.
	panic(http.ErrAbortHandler)
}

// MultiLayerImage is a three-layer image whose upper layers delete with
// whiteouts and hide with an opaque directory what lower ones made:
//
//	layer 1: etc/, etc/hostname, etc/gone, data/, data/old, keep/file
//	layer 2: etc/.wh.gone, data/.wh..wh..opq, data/new, etc/hostname (new content)
//	layer 3: bin/, bin/tool (0755), link -> etc/hostname
//
// The merged view holds etc/hostname ("two\n"), data/new, keep/file,
// bin/tool, link; not etc/gone nor data/old.
func MultiLayerImage(t testing.TB) v1.Image {
	t.Helper()
	l1 := layertest.Tar(
		layertest.Dir("etc"), layertest.File("etc/hostname", "one\n"), layertest.File("etc/gone", "x"),
		layertest.Dir("data"), layertest.File("data/old", "old"),
		layertest.Dir("keep"), layertest.File("keep/file", "kept\n"),
	)
	l2 := layertest.Tar(
		layertest.Whiteout("etc/gone"), layertest.Opaque("data"), layertest.File("data/new", "new\n"),
		layertest.File("etc/hostname", "two\n"),
	)
	l3 := layertest.Tar(
		layertest.Dir("bin"), layertest.File("bin/tool", "#!/bin/sh\necho tool\n", layertest.Mode(0o755)),
		layertest.Symlink("link", "etc/hostname"),
	)
	return ImageOfTars(t, l1, l2, l3)
}

// ImageOfTars makes an image of uncompressed layer tars (gzip-compressed),
// bottom first, with imagebuild's default config.
func ImageOfTars(t testing.TB, tars ...[]byte) v1.Image {
	t.Helper()
	var ls []v1.Layer
	for _, b := range tars {
		l, err := imagebuild.LayerFromTar(b)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	img, err := imagebuild.FromLayers(imagebuild.DefaultConfig(), ls...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// WithPlatform returns img with its config's os/architecture changed.
func WithPlatform(t testing.TB, img v1.Image, os, arch string) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = os, arch
	out, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// MultiArchIndex makes an index of two one-layer images, linux/amd64 and
// linux/arm64, whose layers differ (each holds etc/arch naming its
// architecture).
func MultiArchIndex(t testing.TB) (idx v1.ImageIndex, amd64, arm64 v1.Image) {
	t.Helper()
	amd64 = WithPlatform(t, ImageOfTars(t, layertest.Tar(layertest.Dir("etc"), layertest.File("etc/arch", "amd64\n"))), "linux", "amd64")
	arm64 = WithPlatform(t, ImageOfTars(t, layertest.Tar(layertest.Dir("etc"), layertest.File("etc/arch", "arm64\n"))), "linux", "arm64")
	idx = mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
	)
	return idx, amd64, arm64
}

// PushIndex pushes idx to host/repo:tag (plain HTTP) and returns the
// reference.
func PushIndex(t testing.TB, idx v1.ImageIndex, host, repoTag string) string {
	t.Helper()
	ref := host + "/" + repoTag
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatalf("pushing index %s: %v", ref, err)
	}
	return ref
}

// RawLayer is a layer of arbitrary compressed bytes (corrupt ones too)
// claiming the given diff_id: for images a registry accepts but whose
// layers must be refused.
func RawLayer(compressed []byte, diffID v1.Hash) v1.Layer {
	sum := sha256.Sum256(compressed)
	return &rawLayer{b: compressed, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, diffID: diffID}
}

type rawLayer struct {
	b              []byte
	digest, diffID v1.Hash
}

func (l *rawLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *rawLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *rawLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.b)), nil
}
func (l *rawLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, fmt.Errorf("raw layer %s: no uncompressed form", l.digest)
}
func (l *rawLayer) Size() (int64, error)                { return int64(len(l.b)), nil }
func (l *rawLayer) MediaType() (types.MediaType, error) { return types.DockerLayer, nil }

// ImageOfLayers makes an image of the given layers with imagebuild's
// default config.
func ImageOfLayers(t testing.TB, ls ...v1.Layer) v1.Image {
	t.Helper()
	img, err := imagebuild.FromLayers(imagebuild.DefaultConfig(), ls...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// LayerDigests returns the digests of img's layers, bottom first.
func LayerDigests(t testing.TB, img v1.Image) []v1.Hash {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// EStargzLayer builds an eStargz layer of the tar tarb, with the
// annotation of its TOC's digest.
func EStargzLayer(t testing.TB, tarb []byte, opts ...estargz.Option) mutate.Addendum {
	t.Helper()
	b, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarb), 0, int64(len(tarb))), opts...)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(b)
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	diff, err := v1.NewHash(b.DiffID().String())
	if err != nil {
		t.Fatal(err)
	}
	return mutate.Addendum{
		Layer:       RawLayer(blob, diff),
		Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: b.TOCDigest().String()},
	}
}
