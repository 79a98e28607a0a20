package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// epoch is the fixed timestamp of built images, so builds are reproducible.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// DefaultConfig is the runtime configuration the built images carry unless
// the caller gives another.
func DefaultConfig() v1.Config {
	return v1.Config{
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Cmd: []string{"/bin/sh"},
	}
}

// FromTarballFile makes a one-layer image from a root filesystem tarball
// (gzip or plain), such as the Alpine minirootfs.
func FromTarballFile(tarball string, cfg v1.Config) (v1.Image, error) {
	if _, err := os.Stat(tarball); err != nil {
		return nil, fmt.Errorf("rootfs tarball: %w", err)
	}
	l, err := layerFromFile(tarball)
	if err != nil {
		return nil, fmt.Errorf("rootfs tarball %s: %w", tarball, err)
	}
	return FromLayers(cfg, l)
}

func layerFromFile(p string) (v1.Layer, error) {
	return tarball.LayerFromFile(p)
}

// FromLayers makes an image of the given layers (bottom first) and config.
func FromLayers(cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, fmt.Errorf("appending layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Created = v1.Time{Time: epoch}
	return mutate.ConfigFile(img, cf)
}

// LayerFromTar makes a gzip-compressed layer from an uncompressed tar stream.
func LayerFromTar(tarBytes []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	})
}

// Busybox makes an image from a static busybox binary (Debian's
// busybox-static installs one at /bin/busybox): the binary, a link for each
// applet it lists, and the few files a shell expects (/etc/passwd, group).
func Busybox(busybox string, cfg v1.Config) (v1.Image, error) {
	b, err := BusyboxTar(busybox)
	if err != nil {
		return nil, err
	}
	l, err := LayerFromTar(b)
	if err != nil {
		return nil, err
	}
	return FromLayers(cfg, l)
}

// BusyboxPath finds a static busybox: Debian's busybox-static package puts
// it at /bin/busybox.
func BusyboxPath() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("busybox not found: install Debian's busybox-static package (make deps)")
}

// BusyboxTar returns the uncompressed tar of the busybox root filesystem.
func BusyboxTar(busybox string) ([]byte, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("reading busybox: %w", err)
	}
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w (is it busybox-static?)", busybox, err)
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "tmp",
		"proc", "sys", "dev", "var", "var/www", "home"}
	for _, d := range dirs {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if d == "root" {
			mode = 0o700
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: epoch}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	seen := map[string]bool{"bin/busybox": true}
	for _, a := range applets {
		a = strings.TrimPrefix(path.Clean("/"+a), "/")
		if seen[a] || !strings.Contains(a, "/") {
			continue
		}
		seen[a] = true
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: a, Linkname: "/bin/busybox", Mode: 0o777, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	files := map[string]string{
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
		"etc/group":      "root:x:0:\nnogroup:x:65534:\nuser:x:1000:\nwheel:x:10:user\n",
		"etc/os-release": "NAME=busybox\nID=busybox\n",
	}
	for _, n := range sortedKeys(files) {
		c := files[n]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(c)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, c); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Gzip compresses b; a helper for building layers by hand.
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// Registry is an in-process registry (go-containerregistry's pkg/registry)
// listening on a loopback port.
type Registry struct {
	Host string // host:port
	srv  *http.Server
	ln   net.Listener
}

// StartRegistry serves a fresh in-memory registry on addr ("127.0.0.1:0" for
// any free port). Close stops it.
func StartRegistry(addr string, opts ...registry.Option) (*Registry, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("registry listen on %s: %w", addr, err)
	}
	// Quiet unless the caller asks for a logger: its access log would drown
	// the output of the demo and the tests.
	opts = append([]registry.Option{registry.Logger(log.New(io.Discard, "", 0))}, opts...)
	srv := &http.Server{Handler: registry.New(opts...), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return &Registry{Host: ln.Addr().String(), srv: srv, ln: ln}, nil
}

// Close stops the registry.
func (r *Registry) Close() error { return r.srv.Close() }

// Push writes img to ref (a reference on a loopback registry; plain HTTP).
func Push(img v1.Image, ref string) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("reference %q: %w", ref, err)
	}
	if err := remote.Write(r, img); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	return nil
}

// WriteDockerRegistryConfig writes, in dir, a configuration for Debian's
// docker-registry (the distribution registry) that keeps its storage in
// dir/data, listens on addr and logs only errors, and returns its path:
// `docker-registry serve PATH` starts it.
func WriteDockerRegistryConfig(dir, addr string) (string, error) {
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, data, addr)
	p := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		return "", err
	}
	return p, nil
}
