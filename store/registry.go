package store

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxManifestSize bounds a manifest or index read from a registry; real
// ones are a few KB, 4 MiB is what the distribution registry accepts.
const maxManifestSize = 4 << 20

// registryClient talks to one repository of one registry with the
// credentials of the default keychain (docker and podman config files) or
// the anonymous token flow.
type registryClient struct {
	repo   name.Repository
	image  string // the normalised reference, for errors
	scheme string
	client *http.Client
}

// httpPolicy refuses plain HTTP to registries that are neither on the
// loopback interface nor explicitly insecure. go-containerregistry would
// also try HTTP for RFC 1918 addresses; podman does not, neither do we.
type httpPolicy struct {
	inner    http.RoundTripper
	insecure bool
}

func (p *httpPolicy) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" && !p.insecure && !IsLoopback(r.URL.Host) {
		return nil, fmt.Errorf("plain HTTP to %s refused: use --tls-verify=false for a registry without TLS", r.URL.Host)
	}
	return p.inner.RoundTrip(r)
}

func newBaseTransport(insecure bool) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{InsecureSkipVerify: insecure}
	t.ResponseHeaderTimeout = 60 * time.Second
	t.MaxIdleConnsPerHost = 8
	return &httpPolicy{inner: t, insecure: insecure}
}

// newRegistryClient authenticates to ref's registry for pulling.
func newRegistryClient(ctx context.Context, ref name.Reference, insecure bool) (*registryClient, error) {
	c, connect, err := registryClientParts(ref, insecure)
	if err != nil {
		return nil, err
	}
	rt, err := connect(ctx)
	if err != nil {
		return nil, remoteError(c.image, c.repo.RegistryStr(), "", err)
	}
	c.client = &http.Client{Transport: rt}
	return c, nil
}

// newLazyRegistryClient is newRegistryClient without the network: the
// registry is pinged and a token fetched at the first request, so that a
// lazy run that finds all it needs in the store and the chunk cache makes
// no request at all. An error of that first contact is the request's
// (remoteError names it as newRegistryClient would).
func newLazyRegistryClient(ref name.Reference, insecure bool) (*registryClient, error) {
	c, connect, err := registryClientParts(ref, insecure)
	if err != nil {
		return nil, err
	}
	c.client = &http.Client{Transport: &connectOnUse{connect: connect}}
	return c, nil
}

// registryClientParts returns the client for ref without its transport,
// and the function that authenticates one.
func registryClientParts(ref name.Reference, insecure bool) (*registryClient, func(context.Context) (http.RoundTripper, error), error) {
	repo := ref.Context()
	auth, err := authn.DefaultKeychain.Resolve(repo)
	if err != nil {
		return nil, nil, fmt.Errorf("reading credentials for %s: %w (check ~/.docker/config.json and ~/.config/containers/auth.json)", repo.RegistryStr(), err)
	}
	c := &registryClient{repo: repo, image: refString(ref), scheme: repo.Registry.Scheme()}
	connect := func(ctx context.Context) (http.RoundTripper, error) {
		return transport.NewWithContext(ctx, repo.Registry, auth, newBaseTransport(insecure), []string{repo.Scope(transport.PullScope)})
	}
	return c, connect, nil
}

// connectOnUse is an http.RoundTripper that authenticates (connect) at its
// first request. A failed attempt is not kept: the next request tries again.
type connectOnUse struct {
	connect func(context.Context) (http.RoundTripper, error)
	mu      sync.Mutex
	rt      http.RoundTripper
}

func (c *connectOnUse) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	rt := c.rt
	if rt == nil {
		var err error
		if rt, err = c.connect(r.Context()); err != nil {
			c.mu.Unlock()
			if r.Body != nil {
				r.Body.Close()
			}
			return nil, err
		}
		c.rt = rt
	}
	c.mu.Unlock()
	return rt.RoundTrip(r)
}

func (c *registryClient) url(kind, id string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", c.scheme, c.repo.RegistryStr(), c.repo.RepositoryStr(), kind, id)
}

var manifestAccept = strings.Join([]string{
	string(types.OCIImageIndex), string(types.OCIManifestSchema1),
	string(types.DockerManifestList), string(types.DockerManifestSchema2),
}, ",")

// manifest fetches the manifest or index named by id (tag or digest) and
// returns its bytes, media type and digest. A digest id, and the registry's
// Docker-Content-Digest header, are checked against the bytes.
func (c *registryClient) manifest(ctx context.Context, id string) ([]byte, types.MediaType, v1.Hash, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("manifests", id), nil)
	if err != nil {
		return nil, "", v1.Hash{}, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, "", v1.Hash{}, remoteError(c.image, c.repo.RegistryStr(), "", err)
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return nil, "", v1.Hash{}, remoteError(c.image, c.repo.RegistryStr(), "", err)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, "", v1.Hash{}, remoteError(c.image, c.repo.RegistryStr(), "", err)
	}
	if len(b) > maxManifestSize {
		return nil, "", v1.Hash{}, fmt.Errorf("manifest of %s is larger than %d bytes: refusing it", c.image, maxManifestSize)
	}
	sum := sha256.Sum256(b)
	h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if strings.HasPrefix(id, "sha256:") && id != h.String() {
		return nil, "", v1.Hash{}, fmt.Errorf("manifest of %s: registry sent content with digest %s: %w", c.image, h, ErrDigestMismatch)
	}
	if d := resp.Header.Get("Docker-Content-Digest"); strings.HasPrefix(d, "sha256:") && d != h.String() {
		return nil, "", v1.Hash{}, fmt.Errorf("manifest of %s: registry says digest %s, content has %s: %w", c.image, d, h, ErrDigestMismatch)
	}
	mt := types.MediaType(resp.Header.Get("Content-Type"))
	if i := strings.IndexByte(string(mt), ';'); i >= 0 {
		mt = types.MediaType(strings.TrimSpace(string(mt[:i])))
	}
	if sniffed := sniffMediaType(b); sniffed != "" && (mt == "" || mt == "application/json" || mt == "text/plain") {
		mt = sniffed
	}
	return b, mt, h, nil
}

// headManifest asks for the digest of the manifest named by id without its
// body (HEAD); ok is false when the registry does not say.
func (c *registryClient) headManifest(ctx context.Context, id string) (v1.Hash, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.url("manifests", id), nil)
	if err != nil {
		return v1.Hash{}, false
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.client.Do(req)
	if err != nil {
		return v1.Hash{}, false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v1.Hash{}, false
	}
	h, err := v1.NewHash(resp.Header.Get("Docker-Content-Digest"))
	if err != nil || checkHash(h) != nil {
		return v1.Hash{}, false
	}
	return h, true
}

// sniffMediaType reads the mediaType field a manifest carries itself.
func sniffMediaType(b []byte) types.MediaType {
	var m struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests []any           `json:"manifests"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return ""
	}
	if m.MediaType != "" {
		return m.MediaType
	}
	if m.Manifests != nil {
		return types.OCIImageIndex
	}
	return types.OCIManifestSchema1
}

// blob starts a GET of blob h (of size bytes) from byte offset on (offset
// 0: the whole blob). The registry may answer 206 (a range) or 200 (the
// whole blob); the caller checks which. The range is closed
// (bytes=offset-last): go-containerregistry's registry refuses open ones. A
// registry refusing the range (416) is asked for the whole blob.
func (c *registryClient) blob(ctx context.Context, h v1.Hash, offset, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("blobs", h.String()), nil)
	if err != nil {
		return nil, err
	}
	if offset > 0 && offset < size {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, size-1))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, remoteError(c.image, c.repo.RegistryStr(), h.String(), err)
	}
	if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && req.Header.Get("Range") != "" {
		resp.Body.Close()
		return c.blob(ctx, h, 0, size)
	}
	if err := transport.CheckError(resp, http.StatusOK, http.StatusPartialContent); err != nil {
		resp.Body.Close()
		return nil, remoteError(c.image, c.repo.RegistryStr(), h.String(), err)
	}
	return resp, nil
}

// smallBlob fetches a manifest-sized blob (a config) whole and verifies it.
func (c *registryClient) smallBlob(ctx context.Context, h v1.Hash) ([]byte, error) {
	resp, err := c.blob(ctx, h, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: config %s: %w", c.image, h, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: config %s: %w", c.image, h, remoteError(c.image, c.repo.RegistryStr(), h.String(), err))
	}
	if len(b) > maxManifestSize {
		return nil, fmt.Errorf("%s: config %s is larger than %d bytes: refusing it", c.image, h, maxManifestSize)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != h.Hex {
		return nil, fmt.Errorf("%s: config %s: registry sent content with digest sha256:%s: %w", c.image, h, got, ErrDigestMismatch)
	}
	return b, nil
}

// remoteError turns an error talking to a registry into one line naming the
// image (and the blob, if any) and saying what to do.
func remoteError(image, registry, blob string, err error) error {
	// For a blob the caller names the image and the layer; the message
	// starts with the cause.
	what := image
	if blob != "" {
		what = "blob " + blob
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("pulling %s: %w", what, err)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch {
		case te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode):
			if blob != "" {
				return fmt.Errorf("registry %s does not have the blob (%v): %w; the image is broken in the registry, push it again", registry, briefError(te), ErrRemoteNotFound)
			}
			return fmt.Errorf("%s: %w (%s answered %v); check the name and tag", image, ErrRemoteNotFound, registry, briefError(te))
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return fmt.Errorf("%s: access denied by %s (%v); check the name, or log in (podman login or docker login) so that ~/.config/containers/auth.json or ~/.docker/config.json holds credentials", what, registry, briefError(te))
		case te.StatusCode == http.StatusTooManyRequests:
			return fmt.Errorf("%s: registry %s is rate limiting (%v); wait and try again, or log in", what, registry, briefError(te))
		case te.StatusCode >= 500:
			return fmt.Errorf("%s: registry %s failed with %d %s (%v); try again later", what, registry, te.StatusCode, http.StatusText(te.StatusCode), briefError(te))
		}
		return fmt.Errorf("%s: registry %s answered %d %s (%v)", what, registry, te.StatusCode, http.StatusText(te.StatusCode), briefError(te))
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: cannot connect to registry %s: connection refused; check the registry address and that it is running", what, registry)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("%s: registry host %s not found (%v); check the name and your network", what, registry, dnsErr)
	}
	msg := err.Error()
	if strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:") || strings.Contains(msg, "HTTP response to HTTPS client") {
		return fmt.Errorf("%s: TLS with registry %s failed: %w; for a registry without valid TLS use --tls-verify=false", what, registry, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%s: registry %s timed out: %w; check your network and try again", what, registry, err)
	}
	return fmt.Errorf("%s: talking to registry %s: %w", what, registry, err)
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

// briefError is a transport.Error without the request URL.
func briefError(te *transport.Error) string {
	if len(te.Errors) > 0 {
		var parts []string
		for _, d := range te.Errors {
			parts = append(parts, d.String())
		}
		return strings.Join(parts, "; ")
	}
	return fmt.Sprintf("%d %s", te.StatusCode, http.StatusText(te.StatusCode))
}
