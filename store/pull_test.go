package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/internal/imagebuild"
	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/layertest"
)

func init() {
	// Keep fault tests fast: resume quickly, give up quickly.
	retryDelay = 10 * time.Millisecond
}

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func quiet() PullOptions { return PullOptions{Quiet: true} }

func digestOf(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func configDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// listDir returns the names in dir.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestPullMultiLayer(t *testing.T) {
	host := testenv.Registry(t)
	img := testenv.MultiLayerImage(t)
	ref := testenv.Push(t, img, host, "test/multi:1")
	s := openTemp(t)
	var out bytes.Buffer
	got, err := s.Pull(context.Background(), ref, PullOptions{Progress: &out})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != ref || got.ID != configDigest(t, img).Hex || got.ManifestDigest != digestOf(t, img) {
		t.Fatalf("pulled %+v", got)
	}
	if len(got.Layers) != 3 {
		t.Fatalf("%d layers, want 3", len(got.Layers))
	}
	// One progress line per layer when not a terminal.
	if lines := strings.Count(out.String(), " done\n"); lines != 3 {
		t.Errorf("progress output:\n%s", out.String())
	}
	// Blobs and indexes are there; the merged view is what the layers say.
	var ixs []*layers.Index
	for _, l := range got.Layers {
		if _, err := os.Stat(s.BlobPath(l.Digest)); err != nil {
			t.Fatal(err)
		}
		ix, err := s.LayerIndex(l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		ixs = append(ixs, ix)
		// The gzip checkpoints read the tar back from the blob.
		cp, err := s.Checkpoints(l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(s.BlobPath(l.Digest))
		if err != nil {
			t.Fatal(err)
		}
		ra, err := cp.NewReaderAt(f, l.Size)
		if err != nil {
			t.Fatal(err)
		}
		tarb := make([]byte, ix.TarSize)
		if _, err := ra.ReadAt(tarb, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		f.Close()
		if sha256Hash(tarb) != l.DiffID {
			t.Errorf("tar read through the checkpoints of %s does not match its diff_id", l.Digest)
		}
	}
	tree, err := layers.Merge(ixs)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"etc/hostname", "data/new", "keep/file", "bin/tool", "link"} {
		if tree.Lookup(p) == nil {
			t.Errorf("merged view lacks %s", p)
		}
	}
	for _, p := range []string{"etc/gone", "data/old", "etc/.wh.gone"} {
		if tree.Lookup(p) != nil {
			t.Errorf("merged view has %s", p)
		}
	}
	if n := listDir(t, s.tmpDir()); len(n) != 0 {
		t.Errorf("tmp/ not empty after pull: %v", n)
	}

	// Lookup by every kind of name.
	for _, q := range []string{ref, got.ID, got.ID[:12], "sha256:" + got.ID, host + "/test/multi@" + got.ManifestDigest.String()} {
		li, err := s.Lookup(q)
		if err != nil {
			t.Errorf("Lookup(%q): %v", q, err)
			continue
		}
		if li.ID != got.ID || len(li.Layers) != 3 || li.Config == nil {
			t.Errorf("Lookup(%q) = %+v", q, li)
		}
	}
	if _, err := s.Lookup(host + "/test/multi:2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of unknown tag: %v", err)
	}
	ims, err := s.Images()
	if err != nil || len(ims) != 1 || ims[0].Names[0] != ref || ims[0].Size <= 0 {
		t.Fatalf("Images() = %+v, %v", ims, err)
	}
}

func TestPullAgainFetchesNoLayer(t *testing.T) {
	fr := testenv.NewFaultRegistry(t)
	img := testenv.MultiLayerImage(t)
	ref := testenv.Push(t, img, fr.Host, "test/again:1")
	s := openTemp(t)
	for i := 0; i < 2; i++ {
		if _, err := s.Pull(context.Background(), ref, quiet()); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range testenv.LayerDigests(t, img) {
		if n := fr.BlobGets(d.String()); n != 1 {
			t.Errorf("layer %s fetched %d times, want 1", d, n)
		}
	}
}

func TestConcurrentPullsSameImage(t *testing.T) {
	fr := testenv.NewFaultRegistry(t)
	img := testenv.MultiLayerImage(t)
	ref := testenv.Push(t, img, fr.Host, "test/conc:1")
	root := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A Store per goroutine: as separate processes would.
			s, err := Open(root)
			if err == nil {
				_, err = s.Pull(context.Background(), ref, quiet())
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range testenv.LayerDigests(t, img) {
		if n := fr.BlobGets(d.String()); n != 1 {
			t.Errorf("layer %s fetched %d times by 4 concurrent pulls, want 1", d, n)
		}
	}
	s, _ := Open(root)
	ims, err := s.Images()
	if err != nil || len(ims) != 1 || len(ims[0].Names) != 1 {
		t.Fatalf("Images() = %+v, %v", ims, err)
	}
	if n := listDir(t, s.tmpDir()); len(n) != 0 {
		t.Errorf("tmp/ not empty: %v", n)
	}
}

func TestSharedLayerStoredOnceAndGC(t *testing.T) {
	fr := testenv.NewFaultRegistry(t)
	base := layertest.Tar(layertest.Dir("etc"), layertest.File("etc/base", "base\n"))
	a := testenv.ImageOfTars(t, base, layertest.Tar(layertest.File("a", "a\n")))
	b := testenv.ImageOfTars(t, base, layertest.Tar(layertest.File("b", "b\n")))
	refA := testenv.Push(t, a, fr.Host, "test/a:1")
	refB := testenv.Push(t, b, fr.Host, "test/b:1")
	s := openTemp(t)
	ctx := context.Background()
	ia, err := s.Pull(ctx, refA, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ib, err := s.Pull(ctx, refB, quiet())
	if err != nil {
		t.Fatal(err)
	}
	shared := ia.Layers[0].Digest
	if ib.Layers[0].Digest != shared {
		t.Fatal("test images do not share their base layer")
	}
	if n := fr.BlobGets(shared.String()); n != 1 {
		t.Errorf("shared layer fetched %d times, want 1", n)
	}
	// 2 manifests + 2 configs + 3 layers.
	if n := len(listDir(t, filepath.Join(s.Root(), "blobs", "sha256"))); n != 7 {
		t.Errorf("%d blobs, want 7", n)
	}

	// An extracted layer and a partial download and a stray temp file.
	dir, err := s.LayerDir(ctx, ia.Layers[1].DiffID, "", func(ctx context.Context, tmp string) error {
		return os.WriteFile(filepath.Join(tmp, "a"), []byte("a\n"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.tmpDir(), strings.Repeat("0", 64)+".partial"), []byte("half"), 0o644)
	os.WriteFile(filepath.Join(s.tmpDir(), "write-123.tmp"), []byte("x"), 0o644)
	// Inflated spans of a layer in use: a span, the temporary file of a
	// writer killed an hour ago, and one of a writer still writing.
	inf := s.InflatedDir(shared)
	os.MkdirAll(inf, 0o700)
	os.WriteFile(filepath.Join(inf, "0-4194304"), []byte("span"), 0o644)
	os.WriteFile(filepath.Join(inf, ".tmp-killed"), []byte("half a span"), 0o644)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(inf, ".tmp-killed"), old, old)
	os.WriteFile(filepath.Join(inf, ".tmp-writing"), []byte("a span being written"), 0o644)
	// And those of a layer no image has.
	gone := s.InflatedDir(v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("e", 64)})
	os.MkdirAll(gone, 0o700)
	os.WriteFile(filepath.Join(gone, "0-4194304"), []byte("span"), 0o644)

	// GC with both images: only the partial, the temp files of killed
	// writers and the spans of the unknown layer go.
	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Blobs != 0 || st.Partials != 1 || st.TempFiles != 2 || st.LayerDirs != 0 || st.InflatedDirs != 1 {
		t.Errorf("gc with everything referenced: %+v", st)
	}
	if got := listDir(t, inf); !slices.Equal(got, []string{".tmp-writing", "0-4194304"}) {
		t.Errorf("inflated spans of a layer in use after gc: %v", got)
	}
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Errorf("inflated spans of an unknown layer: %v", err)
	}

	// rmi a: its own layer, config, manifest, index and extracted dir go;
	// the shared layer stays for b.
	res, err := s.Remove(ctx, refA, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != ia.ID || len(res.Untagged) != 1 {
		t.Errorf("Remove: %+v", res)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("extracted layer of removed image still there: %v", err)
	}
	for _, h := range []v1.Hash{ia.Layers[1].Digest, ia.ManifestDigest} {
		if _, err := os.Stat(s.BlobPath(h)); !os.IsNotExist(err) {
			t.Errorf("blob %s of removed image still there", h)
		}
	}
	if _, err := os.Stat(s.IndexPath(ia.Layers[1].Digest)); !os.IsNotExist(err) {
		t.Errorf("index of removed layer still there")
	}
	if _, err := os.Stat(s.BlobPath(shared)); err != nil {
		t.Errorf("shared layer removed with a: %v", err)
	}
	if _, err := s.Lookup(refB); err != nil {
		t.Error(err)
	}
	if _, err := s.Remove(ctx, refA, false); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), refA) {
		t.Errorf("second Remove: %v", err)
	}
	if _, err := s.Remove(ctx, ib.ID[:12], false); err != nil {
		t.Fatal(err)
	}
	if n := listDir(t, filepath.Join(s.Root(), "blobs", "sha256")); len(n) != 0 {
		t.Errorf("blobs left after removing every image: %v", n)
	}
}

func TestRemoveByIDWithSeveralNames(t *testing.T) {
	host := testenv.Registry(t)
	img := testenv.MultiLayerImage(t)
	r1 := testenv.Push(t, img, host, "test/n:1")
	r2 := testenv.Push(t, img, host, "test/n:2")
	s := openTemp(t)
	ctx := context.Background()
	var id string
	for _, r := range []string{r1, r2} {
		i, err := s.Pull(ctx, r, quiet())
		if err != nil {
			t.Fatal(err)
		}
		id = i.ID
	}
	ims, _ := s.Images()
	if len(ims) != 1 || len(ims[0].Names) != 2 {
		t.Fatalf("Images() = %+v", ims)
	}
	if _, err := s.Remove(ctx, id, false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("Remove by ID of a twice-named image: %v", err)
	}
	res, err := s.Remove(ctx, r1, false)
	if err != nil || res.Deleted != "" {
		t.Fatalf("untag one of two names: %+v, %v", res, err)
	}
	res, err = s.Remove(ctx, id, true)
	if err != nil || res.Deleted != id {
		t.Fatalf("Remove --force: %+v, %v", res, err)
	}
}

func TestPullMultiArch(t *testing.T) {
	host := testenv.Registry(t)
	idx, amd, arm := testenv.MultiArchIndex(t)
	ref := testenv.PushIndex(t, idx, host, "test/multiarch:1")
	ctx := context.Background()

	s := openTemp(t)
	img, err := s.Pull(ctx, ref, PullOptions{Quiet: true, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	if img.ManifestDigest != digestOf(t, amd) || img.Config.Architecture != "amd64" || img.IndexDigest == nil {
		t.Errorf("amd64 pull got %s (%s)", img.ManifestDigest, img.Config.Architecture)
	}
	if HostPlatform().Architecture == "amd64" {
		s2 := openTemp(t)
		img, err := s2.Pull(ctx, ref, quiet())
		if err != nil {
			t.Fatal(err)
		}
		if img.ManifestDigest != digestOf(t, amd) {
			t.Errorf("default platform on amd64 chose %s", img.Config.Architecture)
		}
	}
	s3 := openTemp(t)
	img, err = s3.Pull(ctx, ref, PullOptions{Quiet: true, Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	if img.ManifestDigest != digestOf(t, arm) || img.Config.Architecture != "arm64" {
		t.Errorf("arm64 pull got %s (%s)", img.ManifestDigest, img.Config.Architecture)
	}
	// The index digest finds the image too.
	idxDigest, _ := idx.Digest()
	if _, err := s3.Lookup(host + "/test/multiarch@" + idxDigest.String()); err != nil {
		t.Error(err)
	}

	_, err = s3.Pull(ctx, ref, PullOptions{Quiet: true, Platform: &v1.Platform{OS: "linux", Architecture: "riscv64"}})
	if err == nil || !strings.Contains(err.Error(), "linux/riscv64") || !strings.Contains(err.Error(), "linux/arm64") {
		t.Errorf("pull of a platform the index lacks: %v", err)
	}
}

func TestPullByDigest(t *testing.T) {
	host := testenv.Registry(t)
	img := testenv.MultiLayerImage(t)
	testenv.Push(t, img, host, "test/d:1")
	d := digestOf(t, img)
	s := openTemp(t)
	ref := host + "/test/d@" + d.String()
	got, err := s.Pull(context.Background(), ref, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != ref || got.ManifestDigest != d {
		t.Fatalf("pulled %s %s", got.Name, got.ManifestDigest)
	}
	// A digest the registry does not have.
	bad := host + "/test/d@sha256:" + strings.Repeat("ab", 32)
	_, err = s.Pull(context.Background(), bad, quiet())
	if !errors.Is(err, ErrRemoteNotFound) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("pull of unknown digest: %v", err)
	}
}

func TestPullRegistryErrors(t *testing.T) {
	host := testenv.Registry(t)
	s := openTemp(t)
	ctx := context.Background()
	_, err := s.Pull(ctx, host+"/no/such:image", quiet())
	if !errors.Is(err, ErrRemoteNotFound) || !strings.Contains(err.Error(), host+"/no/such:image") || !strings.Contains(err.Error(), "check the name") {
		t.Errorf("unknown image: %v", err)
	}
	// Nothing listens on this port (the registry took it and let it go).
	r, err := imagebuild.StartRegistry("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := r.Host
	r.Close()
	_, err = s.Pull(ctx, dead+"/x:1", quiet())
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), dead+"/x:1") {
		t.Errorf("dead registry: %v", err)
	}
	if ims, _ := s.Images(); len(ims) != 0 {
		t.Errorf("images after failed pulls: %+v", ims)
	}
}

// faultSetup pushes a one-layer image of about 300 KB of incompressible
// data and returns its reference and layer.
func faultSetup(t *testing.T, fr *testenv.FaultRegistry, repo string) (string, v1.Hash) {
	t.Helper()
	data := make([]byte, 300<<10)
	x := uint32(1)
	for i := range data {
		x = x*1664525 + 1013904223
		data[i] = byte(x >> 24)
	}
	img := testenv.ImageOfTars(t, layertest.Tar(layertest.File("big", string(data))))
	ref := testenv.Push(t, img, fr.Host, repo)
	return ref, testenv.LayerDigests(t, img)[0]
}

// checkNoBlob asserts the layer is neither in blobs/ nor recorded.
func checkNoBlob(t *testing.T, s *Store, h v1.Hash) {
	t.Helper()
	if _, err := os.Stat(s.BlobPath(h)); !os.IsNotExist(err) {
		t.Errorf("blob %s present after a failed pull", h)
	}
	if ims, err := s.Images(); err != nil || len(ims) != 0 {
		t.Errorf("images after a failed pull: %+v, %v", ims, err)
	}
}

func TestFaultServerError(t *testing.T) {
	fr := testenv.NewFaultRegistry(t)
	ref, layer := faultSetup(t, fr, "test/f500:1")
	s := openTemp(t)
	fr.SetFault(testenv.Fault500, layer.String())
	_, err := s.Pull(context.Background(), ref, quiet())
	if err == nil || !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "try again later") {
		t.Fatalf("pull from failing registry: %v", err)
	}
	checkNoBlob(t, s, layer)
	fr.SetFault(testenv.NoFault, "")
	if _, err := s.Pull(context.Background(), ref, quiet()); err != nil {
		t.Fatal(err)
	}
}

func TestFaultWrongBytes(t *testing.T) {
	fr := testenv.NewFaultRegistry(t)
	ref, layer := faultSetup(t, fr, "test/fwrong:1")
	s := openTemp(t)
	fr.SetFault(testenv.FaultWrong, layer.String())
	_, err := s.Pull(context.Background(), ref, quiet())
	if err == nil || !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), layer.String()) {
		t.Fatalf("pull of wrong bytes: %v", err)
	}
	// XOR-ed gzip is no gzip: refused as corrupt or as a mismatch.
	if !errors.Is(err, layers.ErrCorrupt) && !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("error %v is neither corrupt nor mismatch", err)
	}
	checkNoBlob(t, s, layer)
	if n := listDir(t, s.tmpDir()); len(n) != 0 {
		t.Errorf("bad bytes kept in tmp/: %v", n)
	}
	fr.SetFault(testenv.NoFault, "")
	if _, err := s.Pull(context.Background(), ref, quiet()); err != nil {
		t.Fatal(err)
	}
}

func TestFaultDropResumesWithRange(t *testing.T) {
	fr := testenv.NewFaultRegistry(t)
	ref, layer := faultSetup(t, fr, "test/fdrop:1")
	s := openTemp(t)
	fr.SetFault(testenv.FaultDrop, layer.String())
	_, err := s.Pull(context.Background(), ref, quiet())
	if err == nil || !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), layer.String()) || !strings.Contains(err.Error(), "resume") {
		t.Fatalf("pull with dropped connections: %v", err)
	}
	checkNoBlob(t, s, layer)
	fi, err := os.Stat(s.partialPath(layer))
	if err != nil || fi.Size() == 0 {
		t.Fatalf("no partial download kept: %v", err)
	}
	fr.SetFault(testenv.NoFault, "")
	before := len(fr.Ranges())
	img, err := s.Pull(context.Background(), ref, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if len(fr.Ranges()) == before {
		t.Error("second pull sent no Range request")
	}
	if _, err := os.Stat(s.partialPath(layer)); !os.IsNotExist(err) {
		t.Error("partial file left after the resumed pull")
	}
	if _, err := s.LayerIndex(img.Layers[0].Digest); err != nil {
		t.Error(err)
	}
}

func TestFaultDropRecoversWithinPull(t *testing.T) {
	// One dropped response: the pull resumes by itself.
	fr := testenv.NewFaultRegistry(t)
	ref, layer := faultSetup(t, fr, "test/fonce:1")
	s := openTemp(t)
	fr.SetFault(testenv.FaultDrop, layer.String())
	var once sync.Once
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if fr.BlobGets(layer.String()) > 0 {
				once.Do(func() { fr.SetFault(testenv.NoFault, "") })
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if _, err := s.Pull(ctx, ref, quiet()); err != nil {
		// The fault may have hit every attempt before the goroutine ran;
		// then the next pull must finish the job.
		if _, err := s.Pull(context.Background(), ref, quiet()); err != nil {
			t.Fatal(err)
		}
	}
	if len(fr.Ranges()) == 0 {
		t.Error("no Range request after a dropped connection")
	}
}

func TestCorruptAndMismatchedLayers(t *testing.T) {
	host := testenv.Registry(t)
	good := layertest.Tar(layertest.File("f", "content\n"))
	gz := layertest.Gzip(good)
	goodDiff := sha256Hash(good)
	for _, tc := range []struct {
		name  string
		layer v1.Layer
		want  error
	}{
		{"truncated gzip", testenv.RawLayer(gz[:len(gz)-10], goodDiff), layers.ErrCorrupt},
		{"wrong diff_id", testenv.RawLayer(gz, sha256Hash([]byte("other"))), ErrDigestMismatch},
		{"garbage after gzip", testenv.RawLayer(append(bytes.Clone(gz), "junk"...), goodDiff), layers.ErrCorrupt},
		{"hostile entry", testenv.RawLayer(layertest.Gzip(layertest.Tar(layertest.File("../escape", "x"))), goodDiff), layers.ErrPathEscapes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := testenv.ImageOfLayers(t, tc.layer)
			ref := testenv.Push(t, img, host, "test/bad:"+strings.ReplaceAll(tc.name, " ", "-"))
			s := openTemp(t)
			_, err := s.Pull(context.Background(), ref, quiet())
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			d, _ := tc.layer.Digest()
			if !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), d.String()) {
				t.Errorf("error does not name image and layer: %v", err)
			}
			checkNoBlob(t, s, d)
			if n := listDir(t, s.tmpDir()); len(n) != 0 {
				t.Errorf("tmp/ holds %v", n)
			}
		})
	}
}

func sha256Hash(b []byte) v1.Hash {
	h, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		panic(err)
	}
	return h
}

// TestStoredLayerWithOtherDiffID: an image whose config claims another
// diff_id for a layer blob already in the store is refused, although the
// blob is not downloaded again.
func TestStoredLayerWithOtherDiffID(t *testing.T) {
	host := testenv.Registry(t)
	tarb := layertest.Tar(layertest.File("f", "content\n"))
	gz := layertest.Gzip(tarb)
	good := testenv.Push(t, testenv.ImageOfLayers(t, testenv.RawLayer(gz, sha256Hash(tarb))), host, "test/good:1")
	liar := testenv.Push(t, testenv.ImageOfLayers(t, testenv.RawLayer(gz, sha256Hash([]byte("other")))), host, "test/liar:1")
	s := openTemp(t)
	if _, err := s.Pull(context.Background(), good, quiet()); err != nil {
		t.Fatal(err)
	}
	_, err := s.Pull(context.Background(), liar, quiet())
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), liar) {
		t.Fatalf("pull of an image lying about a stored layer: %v", err)
	}
	if _, err := s.Lookup(liar); !errors.Is(err, ErrNotFound) {
		t.Errorf("lying image recorded: %v", err)
	}
}

// TestRepairs: a lost index is rebuilt from the stored blob without a
// download; a stored blob gone bad on disk is fetched again; a damaged
// diff_id record or damaged gzip checkpoints are rebuilt without one.
func TestRepairs(t *testing.T) {
	fr := testenv.NewFaultRegistry(t)
	img := testenv.MultiLayerImage(t)
	ref := testenv.Push(t, img, fr.Host, "test/repair:1")
	s := openTemp(t)
	ctx := context.Background()
	got, err := s.Pull(ctx, ref, quiet())
	if err != nil {
		t.Fatal(err)
	}
	l := got.Layers[0]
	os.Remove(s.IndexPath(l.Digest))
	var out bytes.Buffer
	if _, err := s.Pull(ctx, ref, PullOptions{Progress: &out}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), shortDigest(l.Digest)+" ") || !strings.Contains(out.String(), " indexed\n") {
		t.Errorf("progress after a lost index:\n%s", out.String())
	}
	if n := fr.BlobGets(l.Digest.String()); n != 1 {
		t.Errorf("layer fetched %d times after a lost index, want 1", n)
	}
	// Flip a byte of the stored blob and lose its index.
	b, _ := os.ReadFile(s.BlobPath(l.Digest))
	b[len(b)/2] ^= 1
	os.WriteFile(s.BlobPath(l.Digest), b, 0o644)
	os.Remove(s.IndexPath(l.Digest))
	if _, err := s.Pull(ctx, ref, quiet()); err != nil {
		t.Fatal(err)
	}
	if n := fr.BlobGets(l.Digest.String()); n != 2 {
		t.Errorf("layer fetched %d times after going bad, want 2", n)
	}
	if sum, _ := os.ReadFile(s.BlobPath(l.Digest)); sha256Hash(sum) != l.Digest {
		t.Error("stored blob still bad")
	}
	// A damaged record of the verified diff_id, then damaged gzip
	// checkpoints: each verified and rebuilt from the stored blob.
	for _, damage := range []func(){
		func() { os.WriteFile(s.diffIDPath(l.Digest), []byte("garbage\n"), 0o644) },
		func() {
			b, _ := os.ReadFile(s.CheckpointsPath(l.Digest))
			b[len(b)/2] ^= 1
			os.WriteFile(s.CheckpointsPath(l.Digest), b, 0o644)
		},
	} {
		damage()
		out.Reset()
		if _, err := s.Pull(ctx, ref, PullOptions{Progress: &out}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), " indexed\n") {
			t.Errorf("progress after damage:\n%s", out.String())
		}
		if _, err := s.Checkpoints(l.Digest); err != nil {
			t.Errorf("checkpoints after the pull: %v", err)
		}
	}
	if n := fr.BlobGets(l.Digest.String()); n != 2 {
		t.Errorf("layer fetched %d times after damaged records, want still 2", n)
	}
}
