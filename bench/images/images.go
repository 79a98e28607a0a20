package images

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/dabba/dabba/internal/imagebuild"
)

// Names are the images the package builds, smallest first.
var Names = []string{"alpine", "minbase", "large"}

// Forms are the layer forms of the image matrix.
var Forms = []string{FormGzip, FormEStargz, FormGzipIndex}

// FormGzip is plain gzip layers, as every registry serves them.
const FormGzip = "gzip"

// FormGzipIndex is the FormGzip image itself (same layers, same digests)
// published with its dabba lazy index: the harness runs `dabba index push`
// on it after pushing it (see NeedsIndex).
const FormGzipIndex = "gzip+index"

// NeedsIndex says whether an image in form must have its dabba lazy index
// pushed beside it in the registry before any measured run.
func NeedsIndex(form string) bool { return form == FormGzipIndex }

// ErrNoSource is returned when an image's source is missing (e.g. no
// ../shared/images for the Alpine minirootfs); the caller skips the image.
var ErrNoSource = errors.New("images: source missing")

// Image is a built benchmark image.
type Image struct {
	Name  string
	Form  string
	Image v1.Image
	// Cold is the command a cold pull-to-shell runs: one that really touches
	// the image.
	Cold         []string
	Layers       int
	Compressed   int64 // sum of the layer blobs
	Uncompressed int64 // sum of the layer tars
	// Prioritized is, in form FormEStargz, how many files of the list given
	// to BuildEStargz were placed before a layer's prefetch landmark;
	// Missed lists those that were not (absent from the merged image, or a
	// directory).
	Prioritized int
	Missed      []string
}

// Builder builds images into, and loads them from, its cache.
type Builder struct {
	Cache  string // e.g. /var/tmp/dabba-bench/cache
	Shared string // the directory holding alpine-minirootfs-*.tar.gz
	Mirror string // Debian mirror for debootstrap and apt-get
	Suite  string // Debian suite, e.g. bookworm
	// Logf reports long steps (debootstrap, apt-get, compression); may be nil.
	Logf func(format string, args ...any)
}

func (b *Builder) logf(format string, args ...any) {
	if b.Logf != nil {
		b.Logf(format, args...)
	}
}

// info is kept beside each cached image layout.
type info struct {
	Name         string   `json:"name"`
	Form         string   `json:"form"`
	Manifest     v1.Hash  `json:"manifest"`
	Layers       int      `json:"layers"`
	Compressed   int64    `json:"compressed"`
	Uncompressed int64    `json:"uncompressed"`
	Cold         []string `json:"cold"`
	// FormEStargz only: see Image.
	Prioritized int      `json:"prioritized,omitempty"`
	Missed      []string `json:"missed,omitempty"`
	Source      string   `json:"source,omitempty"` // the gzip form's manifest digest
}

var (
	smallCold = []string{"sh", "-c", "ls / >/dev/null"}
	largeCold = []string{"python3", "-c", "import json"}
)

// Build returns the image name in form, from the cache or built now.
func (b *Builder) Build(ctx context.Context, name, form string) (*Image, error) {
	if form == FormGzipIndex {
		// The index is not part of the image: the harness pushes it after
		// the image, so the layers are the gzip form's, from its cache.
		img, err := b.Build(ctx, name, FormGzip)
		if err != nil {
			return nil, err
		}
		cp := *img
		cp.Form = FormGzipIndex
		return &cp, nil
	}
	if form == FormEStargz {
		return b.BuildEStargz(ctx, name, nil)
	}
	if form != FormGzip {
		return nil, fmt.Errorf("image form %q: want one of %s", form, strings.Join(Forms, ", "))
	}
	key, err := b.key(name)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.Cache, "images", key+"-"+form)
	if img, err := load(dir); err == nil {
		return img, nil
	}
	var layers []layerFile
	var cold []string
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("image cache %s: %w", tmp, err)
	}
	defer os.RemoveAll(tmp)
	cfg := imagebuild.DefaultConfig()
	switch name {
	case "alpine":
		tb, _ := b.alpineTarball()
		lf, err := b.copyGzipLayer(tb, filepath.Join(tmp, "layer0.tar.gz"))
		if err != nil {
			return nil, err
		}
		layers, cold = []layerFile{lf}, smallCold
	case "minbase":
		stages, err := b.debianStages(ctx, 1)
		if err != nil {
			return nil, err
		}
		if layers, err = b.diffLayers(tmp, stages); err != nil {
			return nil, err
		}
		cold, cfg.Cmd = smallCold, []string{"bash"}
	case "large":
		stages, err := b.debianStages(ctx, len(debianStages))
		if err != nil {
			return nil, err
		}
		if layers, err = b.diffLayers(tmp, stages); err != nil {
			return nil, err
		}
		cold, cfg.Cmd = largeCold, []string{"bash"}
	}
	if err := writeLayout(tmp, name, form, cfg, layers, cold); err != nil {
		return nil, err
	}
	for _, l := range layers {
		os.Remove(l.path)
	}
	os.RemoveAll(dir) // a damaged entry that did not load
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("image cache %s: %w", dir, err)
	}
	return load(dir)
}

// key identifies the content of image name (its recipe and sources): the
// name of its cache entries, before the form.
func (b *Builder) key(name string) (string, error) {
	switch name {
	case "alpine":
		tb, err := b.alpineTarball()
		if err != nil {
			return "", err
		}
		sum, err := fileSHA512(tb)
		if err != nil {
			return "", err
		}
		return "alpine-" + sum[:16], nil
	case "minbase":
		return name + "-" + b.imageKey(1), nil
	case "large":
		return name + "-" + b.imageKey(len(debianStages)), nil
	}
	return "", fmt.Errorf("image %q: want one of %s", name, strings.Join(Names, ", "))
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func (b *Builder) alpineTarball() (string, error) {
	m, _ := filepath.Glob(filepath.Join(b.Shared, "alpine-minirootfs-*.tar.gz"))
	if len(m) == 0 {
		return "", fmt.Errorf("alpine: no alpine-minirootfs-*.tar.gz in %s: %w (the project's shared folder sits beside the clone on the project's machines)", b.Shared, ErrNoSource)
	}
	want, err := os.ReadFile(m[0] + ".sha512")
	if err != nil {
		return "", fmt.Errorf("alpine: checksum of %s: %w", m[0], err)
	}
	f := strings.Fields(string(want))
	got, err := fileSHA512(m[0])
	if err != nil {
		return "", err
	}
	if len(f) == 0 || f[0] != got {
		return "", fmt.Errorf("alpine: %s has sha512 %s, its .sha512 file says %q: replace the file", m[0], got, strings.Join(f, " "))
	}
	return m[0], nil
}

func fileSHA512(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha512.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func load(dir string) (*Image, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "info.json"))
	if err != nil {
		return nil, err
	}
	var in info
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, fmt.Errorf("image cache %s: %w", dir, err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("image cache %s: %w", dir, err)
	}
	img, err := p.Image(in.Manifest)
	if err != nil {
		return nil, fmt.Errorf("image cache %s: %w", dir, err)
	}
	return &Image{Name: in.Name, Form: in.Form, Image: img, Cold: in.Cold, Layers: in.Layers,
		Compressed: in.Compressed, Uncompressed: in.Uncompressed, Prioritized: in.Prioritized, Missed: in.Missed}, nil
}

func writeLayout(dir, name, form string, cfg v1.Config, files []layerFile, cold []string) error {
	var ls []v1.Layer
	in := info{Name: name, Form: form, Layers: len(files), Cold: cold}
	for _, f := range files {
		l, err := partial.CompressedToLayer(&f)
		if err != nil {
			return err
		}
		ls = append(ls, l)
		in.Compressed += f.size
		in.Uncompressed += f.usize
	}
	img, err := imagebuild.FromLayers(cfg, ls...)
	if err != nil {
		return fmt.Errorf("image %s: %w", name, err)
	}
	return writeImageLayout(dir, img, in)
}

// layerFile is a gzip layer blob on disk with its digests known, so neither
// needs computing again.
type layerFile struct {
	path         string
	digest, diff v1.Hash
	size, usize  int64
}

func (l *layerFile) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *layerFile) DiffID() (v1.Hash, error)            { return l.diff, nil }
func (l *layerFile) Size() (int64, error)                { return l.size, nil }
func (l *layerFile) MediaType() (types.MediaType, error) { return types.DockerLayer, nil }
func (l *layerFile) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }

// gzipLayer writes the tar that write produces, gzip-compressed, to dst.
func gzipLayer(dst string, write func(io.Writer) error) (layerFile, error) {
	f, err := os.Create(dst)
	if err != nil {
		return layerFile{}, err
	}
	defer f.Close()
	ch, uh := sha256.New(), sha256.New()
	cc := &countWriter{w: io.MultiWriter(f, ch)}
	zw, _ := gzip.NewWriterLevel(cc, gzip.DefaultCompression)
	uc := &countWriter{w: io.MultiWriter(zw, uh)}
	if err := write(uc); err != nil {
		return layerFile{}, fmt.Errorf("layer %s: %w", dst, err)
	}
	if err := zw.Close(); err != nil {
		return layerFile{}, err
	}
	if err := f.Close(); err != nil {
		return layerFile{}, err
	}
	return layerFile{path: dst, digest: sum(ch), diff: sum(uh), size: cc.n, usize: uc.n}, nil
}

func sum(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// copyGzipLayer keeps an existing gzip tarball as the layer blob unchanged
// (the minirootfs as Alpine ships it), computing its digests.
func (b *Builder) copyGzipLayer(src, dst string) (layerFile, error) {
	in, err := os.Open(src)
	if err != nil {
		return layerFile{}, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return layerFile{}, err
	}
	defer out.Close()
	ch, uh := sha256.New(), sha256.New()
	n, err := io.Copy(io.MultiWriter(out, ch), in)
	if err != nil {
		return layerFile{}, fmt.Errorf("copying %s: %w", src, err)
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return layerFile{}, err
	}
	zr, err := gzip.NewReader(in)
	if err != nil {
		return layerFile{}, fmt.Errorf("%s: %w", src, err)
	}
	un, err := io.Copy(uh, zr)
	if err != nil {
		return layerFile{}, fmt.Errorf("%s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return layerFile{}, err
	}
	return layerFile{path: dst, digest: sum(ch), diff: sum(uh), size: n, usize: un}, nil
}

// skipContents are directories whose contents stay out of the layers: the
// runtime mounts its own there, and rootless runtimes cannot create device
// nodes anyway.
var skipContents = []string{"dev", "proc", "sys", "tmp", "run"}

func (b *Builder) diffLayers(tmp string, stages []string) ([]layerFile, error) {
	var out []layerFile
	lower := ""
	for i, s := range stages {
		dst := filepath.Join(tmp, fmt.Sprintf("layer%d.tar.gz", i))
		b.logf("images: compressing layer %d of %d (%s)", i+1, len(stages), filepath.Base(s))
		lf, err := gzipLayer(dst, func(w io.Writer) error {
			_, err := TreeDiff(w, lower, s, TreeDiffOptions{Skip: skipContents})
			return err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, lf)
		lower = s
	}
	return out, nil
}

// debianStages are the chroot scripts of the Debian images, each run in a
// copy of the tree before it; stage 0 runs in debootstrap's output.
var debianStages = []struct{ name, script string }{
	{"s1-minbase", "apt-get clean && rm -rf /var/lib/apt/lists/*"},
	{"s2-python3", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3"},
	{"s3-gcc", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc g++ libc6-dev make python3-dev python3-numpy python3-pip gdb"},
	{"s4-cleanup", strings.Join([]string{
		"apt-get clean",
		"rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/info/*",
		"rm -rf /usr/share/man && mkdir /usr/share/man && echo 'manual pages removed to save space' > /usr/share/man/README",
		"python3 -m compileall -q -f /usr/lib/python3.11 >/dev/null || true",
		"echo 'dabba benchmark image' > /etc/motd",
	}, " && ")},
}

func (b *Builder) suite() string {
	if b.Suite == "" {
		return "bookworm"
	}
	return b.Suite
}

func (b *Builder) mirror() string {
	if b.Mirror == "" {
		return "http://deb.debian.org/debian"
	}
	return b.Mirror
}

// stageKey identifies the tree after stage i: debootstrap's parameters and
// the scripts of stages 0..i, so changing a stage rebuilds it and those
// above, not those below.
func (b *Builder) stageKey(i int) string {
	h := sha256.New()
	fmt.Fprintf(h, "debootstrap --variant=minbase %s %s\n", b.suite(), b.mirror())
	for _, s := range debianStages[:i+1] {
		fmt.Fprintf(h, "%s\n%s\n", s.name, s.script)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// imageKey identifies a Debian image made of the first n stages.
func (b *Builder) imageKey(n int) string {
	return shortSum(fmt.Sprintf("%s skip %v layers v1", b.stageKey(n-1), skipContents))
}

func shortSum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
}

// debianStages returns the first n stage trees, building what is missing.
func (b *Builder) debianStages(ctx context.Context, n int) ([]string, error) {
	for _, c := range []string{"debootstrap", "chroot", "unshare"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("debian images need %s: %w (install debootstrap and util-linux, or run `make bench-deps` as root)", c, ErrNoSource)
		}
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("debian images are built with debootstrap and chroot as root: %w (run the benchmark as root)", ErrNoSource)
	}
	root := filepath.Join(b.Cache, "trees")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	var out []string
	prev := ""
	for i, s := range debianStages[:n] {
		dir := filepath.Join(root, b.stageKey(i)+"-"+s.name)
		if _, err := os.Stat(dir); err != nil {
			tmp := dir + ".tmp"
			os.RemoveAll(tmp)
			if i == 0 {
				b.logf("images: debootstrap --variant=minbase %s (about half a minute)", b.suite())
				if err := runLogged(ctx, dir+".debootstrap.log", "debootstrap", "--variant=minbase", b.suite(), tmp, b.mirror()); err != nil {
					os.RemoveAll(tmp)
					return nil, fmt.Errorf("debootstrap of %s into %s: %w", b.suite(), tmp, err)
				}
			} else if err := runLogged(ctx, "", "cp", "-a", prev, tmp); err != nil {
				os.RemoveAll(tmp)
				return nil, fmt.Errorf("copying stage %s: %w", prev, err)
			}
			b.logf("images: stage %s", s.name)
			if err := chroot(ctx, dir+".log", tmp, s.script); err != nil {
				os.RemoveAll(tmp)
				return nil, fmt.Errorf("image stage %s: %w", s.name, err)
			}
			if err := os.Rename(tmp, dir); err != nil {
				return nil, err
			}
		}
		out = append(out, dir)
		prev = dir
	}
	return out, nil
}

// chroot runs script in dir with /proc mounted and the host's resolv.conf,
// in a private mount namespace that takes the mount with it. It leaves
// /etc/resolv.conf empty with a fixed mtime, as images carry it.
func chroot(ctx context.Context, logFile, dir, script string) error {
	const wrap = `set -e
mount -t proc proc "$1/proc"
rm -f "$1/etc/resolv.conf"
cp /etc/resolv.conf "$1/etc/resolv.conf"
chroot "$1" /bin/sh -c "$2"
: > "$1/etc/resolv.conf"
touch -d @1704067200 "$1/etc/resolv.conf"
`
	return runLogged(ctx, logFile, "unshare", "--mount", "--fork", "--kill-child", "--propagation", "private", "sh", "-c", wrap, "sh", dir, script)
}

func runLogged(ctx context.Context, logFile, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	// On cancel (Ctrl-C), kill the whole group this step started (apt-get,
	// dpkg below the chroot), and only that.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out io.Writer
	var tail tailBuffer
	out = &tail
	if logFile != "" {
		f, err := os.Create(logFile)
		if err != nil {
			return err
		}
		defer f.Close()
		out = io.MultiWriter(f, &tail)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		where := ""
		if logFile != "" {
			where = " (log: " + logFile + ")"
		}
		return fmt.Errorf("%s: %w%s: %s", name, err, where, strings.TrimSpace(tail.String()))
	}
	return nil
}

// tailBuffer keeps the last 2 KiB written to it, for error messages.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2048 {
		t.b = t.b[len(t.b)-2048:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
