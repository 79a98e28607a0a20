package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/dabba/dabba/internal/imagebuild"
	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/layertest"
	"github.com/dabba/dabba/layers/remote"
)

// referrersRegistry starts go-containerregistry's registry with the
// referrers API on.
func referrersRegistry(t *testing.T) string {
	t.Helper()
	r, err := imagebuild.StartRegistry("127.0.0.1:0", registry.WithReferrersSupport(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r.Host
}

// lazyText is n bytes of compressible text, the same for the same seed.
func lazyText(seed uint64, n int) string {
	words := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "\n"}
	r := rand.New(rand.NewPCG(seed, 7))
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte(' ')
	}
	return b.String()[:n]
}

// lazyRandom is n incompressible bytes.
func lazyRandom(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, 11))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

// mixedImage: an eStargz base layer, a gzip layer with several 1 MiB
// checkpoints' worth of files, and the whiteout layers of
// testenv.MultiLayerImage.
func mixedImage(t *testing.T) v1.Image {
	t.Helper()
	es := testenv.EStargzLayer(t, layertest.Tar(
		layertest.Dir("etc"), layertest.File("etc/hostname", "box\n"),
		layertest.File("etc/gone", "x"), layertest.Dir("usr"),
		layertest.File("usr/big", lazyText(1, 600_000), layertest.Mode(0o755)),
		layertest.Symlink("usr/link", "big"),
	), estargz.WithPrioritizedFiles([]string{"etc/hostname"}))
	var files []layertest.Entry
	files = append(files, layertest.Dir("lib"))
	for i := range 6 {
		files = append(files, layertest.File(fmt.Sprintf("lib/f%d", i), lazyText(uint64(10+i), 700_000)))
	}
	files = append(files, layertest.File("lib/small", "small\n"), layertest.Hardlink("lib/hard", "lib/f1"))
	gzl, err := imagebuild.LayerFromTar(layertest.Tar(files...))
	if err != nil {
		t.Fatal(err)
	}
	top, err := imagebuild.LayerFromTar(layertest.Tar(
		layertest.Whiteout("etc/gone"), layertest.File("etc/hostname", "two\n"), layertest.File("lib/f2", "replaced\n"),
	))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(empty.Image, es, mutate.Addendum{Layer: gzl}, mutate.Addendum{Layer: top})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// lazyContents reads every regular file of li's merged tree through its
// LayerReader; eStargz's own files are left out.
func lazyContents(t *testing.T, li *LazyImage) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := li.Tree.Walk(func(p string, n *layers.Node) error {
		if p == estargz.TOCTarName || p == remote.PrefetchLandmark || p == remote.NoPrefetchLandmark {
			return nil
		}
		switch n.Type {
		case layers.TypeReg:
			b := make([]byte, n.Size)
			if _, err := li.ReadAt(int(n.Layer), b, n.Offset); err != nil {
				return fmt.Errorf("reading %s: %w", p, err)
			}
			out[p] = string(b)
		case layers.TypeSymlink:
			out[p] = "-> " + n.Linkname
		case layers.TypeDir:
			out[p] = "dir"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func openLazy(t *testing.T, s *Store, ref string, opts LazyOptions) *LazyImage {
	t.Helper()
	li, err := s.OpenLazy(context.Background(), ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { li.Close() })
	return li
}

func kinds(li *LazyImage) []LazyKind {
	var out []LazyKind
	for _, l := range li.Layers {
		out = append(out, l.Kind)
	}
	return out
}

func sameContents(t *testing.T, got, want map[string]string) {
	t.Helper()
	if len(want) == 0 {
		t.Fatal("nothing to compare")
	}
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s missing", p)
		} else if g != w {
			t.Errorf("%s: %d bytes differ from the full pull's %d", p, len(g), len(w))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: not in the full pull", p)
		}
	}
}

// TestIndexPushAndLazyRead pushes a dabba index for a mixed image to a
// registry with the referrers API, one without (go-containerregistry's
// default, so the sha256-<hex> tag), and Debian's docker-registry (no
// referrers API either), finds it from a fresh store and reads every file
// lazily: the same bytes as the full pull.
func TestIndexPushAndLazyRead(t *testing.T) {
	img := mixedImage(t)
	for _, reg := range []struct {
		name      string
		host      string
		referrers bool
	}{
		{"ggcr-referrers", referrersRegistry(t), true},
		{"ggcr-tag-fallback", testenv.Registry(t), false},
		{"docker-registry", testenv.DockerRegistry(t), false},
	} {
		t.Run(reg.name, func(t *testing.T) {
			ref := testenv.Push(t, img, reg.host, "lazy/mixed:1")
			ctx := context.Background()
			full := openTemp(t)
			res, err := full.PushIndex(ctx, ref, IndexPushOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ls := testenv.LayerDigests(t, img)
			if !slices.Equal(res.Indexed, ls[1:]) || len(res.Skipped) != 1 || res.Skipped[0].Digest != ls[0] {
				t.Fatalf("indexed %v, skipped %v; want the two gzip layers indexed and the eStargz one skipped", res.Indexed, res.Skipped)
			}
			if a, ok := full.PinnedIndex(digestOf(t, img)); !ok || a != res.Artifact {
				t.Fatalf("pinned %v %v, want %s", a, ok, res.Artifact)
			}

			// The registry lists it: through the API or the tag schema.
			r, err := name.ParseReference(ref, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			sub := r.Context().Digest(digestOf(t, img).String())
			idx, err := ggcrremote.Referrers(sub)
			if err != nil {
				t.Fatal(err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if len(im.Manifests) != 1 || im.Manifests[0].Digest != res.Artifact || im.Manifests[0].ArtifactType != IndexArtifactType {
				t.Fatalf("referrers of the image: %+v, want the artifact %s", im.Manifests, res.Artifact)
			}
			_, tagErr := ggcrremote.Head(r.Context().Tag("sha256-" + digestOf(t, img).Hex))
			if reg.referrers != (tagErr != nil) {
				t.Errorf("fallback tag present: %v, want %v", tagErr == nil, !reg.referrers)
			}
			// The image itself is unchanged.
			if d, err := ggcrremote.Head(r); err != nil || d.Digest != digestOf(t, img) {
				t.Fatalf("image digest now %v (%v), want %s", d, err, digestOf(t, img))
			}

			want := lazyContents(t, openLazy(t, full, ref, LazyOptions{NoPrefetch: true, NoRecord: true}))

			// A fresh store finds the artifact through the registry.
			s := openTemp(t)
			li := openLazy(t, s, ref, LazyOptions{NoPrefetch: true})
			if got := kinds(li); !slices.Equal(got, []LazyKind{KindEStargz, KindIndexed, KindIndexed}) {
				t.Fatalf("kinds %v", got)
			}
			if li.IndexArtifact != res.Artifact || li.IndexPinned || li.Notice != "" {
				t.Fatalf("artifact %s pinned %v notice %q", li.IndexArtifact, li.IndexPinned, li.Notice)
			}
			sameContents(t, lazyContents(t, li), want)
			st := li.Stats()
			t.Logf("lazy read of everything: %d requests, %d bytes; index %d bytes", st.Requests, st.BytesFetched, st.IndexBytes)
			if st.WholeBytes != 0 || st.Requests == 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestLazyPlainImageFetchedWhole: layers without an index are fetched
// whole, the notice says so and how to fix it, and the content is right.
func TestLazyPlainImageFetchedWhole(t *testing.T) {
	host := testenv.Registry(t)
	img := testenv.MultiLayerImage(t)
	ref := testenv.Push(t, img, host, "lazy/plain:1")
	s := openTemp(t)
	var notice bytes.Buffer
	li := openLazy(t, s, ref, LazyOptions{Notice: &notice, NoPrefetch: true})
	if got := kinds(li); !slices.Equal(got, []LazyKind{KindFetched, KindFetched, KindFetched}) {
		t.Fatalf("kinds %v", got)
	}
	if !strings.Contains(notice.String(), "3 of 3 layers") || !strings.Contains(notice.String(), "dabba index push "+"127.0.0.1") {
		t.Errorf("notice %q", notice.String())
	}
	got := lazyContents(t, li)
	if got["etc/hostname"] != "two\n" || got["data/new"] != "new\n" || got["keep/file"] != "kept\n" {
		t.Errorf("contents %v", got)
	}
	if _, ok := got["etc/gone"]; ok {
		t.Error("etc/gone not whited out")
	}
	if st := li.Stats(); st.WholeBytes == 0 || st.Requests != 0 {
		t.Errorf("stats %+v", st)
	}
}

// bigImage: a base layer of 8 MiB of random files, and a layer whose first
// file is small, followed by 4 MiB of random files.
func lazyBigImage(t *testing.T) v1.Image {
	t.Helper()
	var base []layertest.Entry
	base = append(base, layertest.Dir("opt"))
	for i := range 8 {
		base = append(base, layertest.File(fmt.Sprintf("opt/r%d", i), lazyRandom(uint64(i), 1<<20)))
	}
	base = append(base, layertest.File("opt/mid", "in the middle\n"))
	for i := 8; i < 12; i++ {
		base = append(base, layertest.File(fmt.Sprintf("opt/r%d", i), lazyRandom(uint64(i), 1<<20)))
	}
	app := []layertest.Entry{layertest.Dir("etc"), layertest.File("etc/small", "hello\n")}
	for i := range 4 {
		app = append(app, layertest.File(fmt.Sprintf("etc/r%d", i), lazyRandom(uint64(100+i), 1<<20)))
	}
	return testenv.ImageOfTars(t, layertest.Tar(base...), layertest.Tar(app...))
}

// TestLazyFetchesLittle: reading one small file of a 16 MB image fetches
// under 5% of its compressed size; a second open fetches nothing (cache)
// and the learned prefetch brings the file at start.
func TestLazyFetchesLittle(t *testing.T) {
	host := referrersRegistry(t)
	img := lazyBigImage(t)
	ref := testenv.Push(t, img, host, "lazy/big:1")
	if _, err := openTemp(t).PushIndex(context.Background(), ref, IndexPushOptions{}); err != nil {
		t.Fatal(err)
	}
	var total int64
	ls, _ := img.Layers()
	for _, l := range ls {
		n, _ := l.Size()
		total += n
	}

	s := openTemp(t)
	li, err := s.OpenLazy(context.Background(), ref, LazyOptions{NoPrefetch: true})
	if err != nil {
		t.Fatal(err)
	}
	read := func(li *LazyImage, p string) string {
		n := li.Tree.Lookup(p)
		if n == nil {
			t.Fatalf("%s not in the tree", p)
		}
		b := make([]byte, n.Size)
		if _, err := li.ReadAt(int(n.Layer), b, n.Offset); err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(li, "etc/small"); got != "hello\n" {
		t.Fatalf("etc/small: %q", got)
	}
	st := li.Stats()
	t.Logf("etc/small: %d bytes in %d requests of a %d-byte image (%.2f%%); index artifact %d bytes",
		st.BytesFetched, st.Requests, total, 100*float64(st.BytesFetched)/float64(total), st.IndexBytes)
	if st.BytesFetched*20 >= total {
		t.Errorf("fetched %d bytes, not under 5%% of %d", st.BytesFetched, total)
	}
	before := st.BytesFetched
	if got := read(li, "opt/mid"); got != "in the middle\n" {
		t.Fatalf("opt/mid: %q", got)
	}
	st = li.Stats()
	// Worst case for incompressible data: the compressed bytes from the
	// checkpoint before the file (IndexSpan of output) rounded out to spans.
	t.Logf("opt/mid (between 1 MiB random files): %d bytes (%.2f%%)", st.BytesFetched-before, 100*float64(st.BytesFetched-before)/float64(total))
	if st.BytesFetched-before > IndexSpan+2*remote.MaxSpanSize {
		t.Errorf("opt/mid fetched %d bytes", st.BytesFetched-before)
	}
	if rec := li.Recorded(); !slices.Equal(rec, []string{"etc/small", "opt/mid"}) {
		t.Errorf("recorded %v", rec)
	}
	if err := li.Close(); err != nil {
		t.Fatal(err)
	}

	// Second run, with the cache emptied: the learned files are fetched at
	// open, so reading them fetches nothing more.
	if _, err := s.PruneCache(0); err != nil {
		t.Fatal(err)
	}
	li2 := openLazy(t, s, ref, LazyOptions{})
	if err := li2.WaitPrefetch(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(li2.Learned(), []string{"etc/small", "opt/mid"}) {
		t.Errorf("learned %v", li2.Learned())
	}
	pre := li2.Stats()
	if got := read(li2, "etc/small") + read(li2, "opt/mid"); got != "hello\nin the middle\n" {
		t.Fatalf("learned files: %q", got)
	}
	post := li2.Stats()
	t.Logf("second run: prefetch %d bytes in %d requests; reads then fetched %d bytes", pre.BytesFetched, pre.Requests, post.BytesFetched-pre.BytesFetched)
	// Only the referrers list is fetched again for the index (the store
	// keeps the artifact).
	if pre.BytesFetched == 0 || post.BytesFetched != pre.BytesFetched || post.IndexBytes > 1024 {
		t.Errorf("second run: after prefetch %+v, after reads %+v", pre, post)
	}
	li2.Close()

	// Third run: everything in the cache, nothing fetched.
	li2b := openLazy(t, s, ref, LazyOptions{})
	li2b.WaitPrefetch()
	read(li2b, "etc/small")
	if st := li2b.Stats(); st.BytesFetched != 0 {
		t.Errorf("third run fetched %+v", st)
	}

	// A third store with an empty cache: the learned list is per store, so
	// nothing is prefetched; the background fetch brings everything.
	s3 := openTemp(t)
	li3 := openLazy(t, s3, ref, LazyOptions{NoPrefetch: true})
	li3.StartBackground()
	if err := li3.WaitBackground(); err != nil {
		t.Fatal(err)
	}
	if st := li3.Stats(); st.BytesFetched < total*99/100 {
		t.Errorf("background fetch got %d of %d bytes", st.BytesFetched, total)
	}
	b3 := li3.Stats().BytesFetched
	lazyContents(t, li3)
	if st := li3.Stats(); st.BytesFetched != b3 {
		t.Errorf("reading after the background fetch fetched %d more bytes", st.BytesFetched-b3)
	}

	// The index pushed again from store s carries what its runs read as
	// the prefetch list: a first run in a fourth store, with an empty
	// cache, fetches it at open, and its reads then fetch nothing.
	res, err := s.PushIndex(context.Background(), ref, IndexPushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.PrefetchRanges == 0 || res.PrefetchBytes < learnBlock {
		t.Fatalf("index pushed from a store with learned runs has no prefetch list: %+v", res)
	}
	s4 := openTemp(t)
	li4 := openLazy(t, s4, ref, LazyOptions{})
	if err := li4.WaitPrefetch(); err != nil {
		t.Fatal(err)
	}
	if li4.prefetchFrom != "index artifact" || len(li4.prefetch) != res.PrefetchRanges {
		t.Errorf("fourth store prefetched %d ranges from %q, want %d from the index artifact", len(li4.prefetch), li4.prefetchFrom, res.PrefetchRanges)
	}
	pre4 := li4.Stats()
	if got := read(li4, "opt/mid") + read(li4, "etc/small"); got != "in the middle\nhello\n" {
		t.Fatalf("prefetched files: %q", got)
	}
	post4 := li4.Stats()
	t.Logf("first run with the published prefetch list: %d bytes in %d requests at open; reads then fetched %d bytes",
		pre4.BytesFetched, pre4.Requests, post4.BytesFetched-pre4.BytesFetched)
	if pre4.BytesFetched == 0 || post4.BytesFetched != pre4.BytesFetched {
		t.Errorf("with the published prefetch list: after prefetch %+v, after reads %+v", pre4, post4)
	}
	li4.Close()
	// --no-prefetch leaves it out.
	if res, err := s.PushIndex(context.Background(), ref, IndexPushOptions{NoPrefetch: true}); err != nil || res.PrefetchRanges != 0 {
		t.Errorf("NoPrefetch push: %+v, %v", res, err)
	}
}

// TestLearnedRanges: the blocks a run reads become ranges in the order of
// their first read, neighbours joined; merging keeps the old ones first
// and stays within the bounds of a record.
func TestLearnedRanges(t *testing.T) {
	d1 := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	d2 := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("b", 64)}
	li := &LazyImage{recSeen: map[[2]int]bool{}, recBlocks: map[block]bool{},
		Layers: []*LazyLayer{{Layer: Layer{Digest: d1}, Index: &layers.Index{}}, {Layer: Layer{Digest: d2}, Index: &layers.Index{}}}}
	li.record(0, li.Layers[0], 10, 100)             // block 0
	li.record(0, li.Layers[0], learnBlock-1, 2)     // blocks 0, 1
	li.record(1, li.Layers[1], 5*learnBlock, 1)     // layer 2 block 5
	li.record(0, li.Layers[0], 2*learnBlock+7, 100) // block 2
	got := li.recordedRanges()
	want := []learnedRange{{d1, 0, 2 * learnBlock}, {d2, 5 * learnBlock, learnBlock}, {d1, 2 * learnBlock, learnBlock}}
	if !slices.Equal(got, want) {
		t.Fatalf("ranges %+v, want %+v", got, want)
	}
	merged := mergeRanges(want[:1], []learnedRange{{d1, learnBlock, 3 * learnBlock}, {d2, 0, learnBlock}})
	wantMerged := []learnedRange{{d1, 0, 2 * learnBlock}, {d1, 2 * learnBlock, 2 * learnBlock}, {d2, 0, learnBlock}}
	if !slices.Equal(merged, wantMerged) {
		t.Fatalf("merged %+v, want %+v", merged, wantMerged)
	}
	// Coalescing joins what lies within the gap, per layer, in the order
	// of first reads.
	K := int64(learnBlock)
	got = coalesce([]learnedRange{{d1, 100 * K, K}, {d2, 0, K}, {d1, 0, K}, {d1, 2 * K, K}, {d1, 101 * K, 2 * K}, {d1, 50 * K, K}}, 2*K)
	want = []learnedRange{{d1, 100 * K, 3 * K}, {d2, 0, K}, {d1, 0, 3 * K}, {d1, 50 * K, K}}
	if !slices.Equal(got, want) {
		t.Fatalf("coalesced %+v, want %+v", got, want)
	}
	for _, bad := range []prefetchList{
		{Ranges: []learnedRange{{d1, -1, 10}}},
		{Ranges: []learnedRange{{d1, 0, 0}}},
		{Ranges: []learnedRange{{v1.Hash{}, 0, 10}}},
		{Ranges: []learnedRange{{d1, 0, maxLearnedBytes}, {d2, 0, 1}}},
	} {
		if bad.check() == nil {
			t.Errorf("prefetch list %+v accepted", bad)
		}
	}
}

// TestLazyCorruptBytes: a registry that damages the layer's bytes gives
// read errors (remote.ErrVerify), never wrong bytes.
func TestLazyCorruptBytes(t *testing.T) {
	fr := testenv.NewFaultRegistry(t)
	img := mixedImage(t)
	ref := testenv.Push(t, img, fr.Host, "lazy/corrupt:1")
	if _, err := openTemp(t).PushIndex(context.Background(), ref, IndexPushOptions{}); err != nil {
		t.Fatal(err)
	}
	ls := testenv.LayerDigests(t, img)
	for i, kind := range []LazyKind{KindEStargz, KindIndexed} {
		t.Run(string(kind), func(t *testing.T) {
			s := openTemp(t)
			li := openLazy(t, s, ref, LazyOptions{NoPrefetch: true, NoRecord: true, Fetch: &remote.Options{Backoff: time.Millisecond}})
			fr.SetFault(testenv.FaultWrong, ls[i].String())
			defer fr.SetFault(testenv.NoFault, "")
			var reads, failed int
			err := li.Tree.Walk(func(p string, n *layers.Node) error {
				if n.Type != layers.TypeReg || int(n.Layer) != i || n.Size == 0 {
					return nil
				}
				reads++
				b := make([]byte, n.Size)
				if _, err := li.ReadAt(int(n.Layer), b, n.Offset); err != nil {
					if !errors.Is(err, remote.ErrVerify) {
						t.Errorf("%s: %v, want ErrVerify", p, err)
					}
					failed++
				} else {
					t.Errorf("%s: read succeeded from a corrupting registry", p)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if reads == 0 || failed != reads {
				t.Errorf("%d reads, %d failed", reads, failed)
			}
		})
	}
}

// TestLazyIndexChecks: an index artifact that does not fit the layer is
// refused with a message naming it.
func TestLazyIndexChecks(t *testing.T) {
	host := referrersRegistry(t)
	img := testenv.MultiLayerImage(t)
	ref := testenv.Push(t, img, host, "lazy/checks:1")
	full := openTemp(t)
	pimg, err := full.Pull(context.Background(), ref, quiet())
	if err != nil {
		t.Fatal(err)
	}
	x, err := full.BuildLazyIndex(pimg.Layers[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := x.check(pimg.Layers[0]); err != nil {
		t.Fatal(err)
	}
	other := pimg.Layers[1]
	if err := x.check(other); err == nil || !strings.Contains(err.Error(), "entry index is of layer") {
		t.Errorf("index of layer 0 checked against layer 1: %v", err)
	}
	b, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var y LazyIndex
	if err := y.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"truncated": b[:len(b)-10],
		"version":   append(append([]byte(lazyIndexMagic), 9), b[8:]...),
		"other":     []byte("hello world"),
		"flipped":   append(append(append([]byte(nil), b[:40]...), b[40]^1), b[41:]...),
	} {
		if err := y.UnmarshalBinary(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	y.Entries.Entries = append(y.Entries.Entries, layers.Entry{Path: "evil", Type: layers.TypeReg, Offset: y.Entries.TarSize, Size: 10})
	if err := y.check(pimg.Layers[0]); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("entry outside the tar: %v", err)
	}

	// RequirePinned in a store without the pin: fetched whole.
	if _, err := full.PushIndex(context.Background(), ref, IndexPushOptions{}); err != nil {
		t.Fatal(err)
	}
	li := openLazy(t, openTemp(t), ref, LazyOptions{RequirePinned: true, NoPrefetch: true})
	if got := kinds(li); !slices.Equal(got, []LazyKind{KindFetched, KindFetched, KindFetched}) {
		t.Errorf("RequirePinned without a pin: kinds %v", got)
	}
}

// TestIndexPushErrors: bad references and images with nothing to index
// fail with messages that say what to do.
func TestIndexPushErrors(t *testing.T) {
	host := testenv.Registry(t)
	s := openTemp(t)
	ctx := context.Background()
	if _, err := s.PushIndex(ctx, host+"/no/such:1", IndexPushOptions{}); !errors.Is(err, ErrRemoteNotFound) {
		t.Errorf("missing image: %v", err)
	}
	if _, err := s.PushIndex(ctx, "UPPER/case", IndexPushOptions{}); err == nil || !strings.Contains(err.Error(), "invalid image reference") {
		t.Errorf("bad reference: %v", err)
	}
	es, err := mutate.Append(empty.Image, testenv.EStargzLayer(t, layertest.Tar(layertest.File("a", "b"))))
	if err != nil {
		t.Fatal(err)
	}
	ref := testenv.Push(t, es, host, "lazy/esonly:1")
	if _, err := s.PushIndex(ctx, ref, IndexPushOptions{}); err == nil || !strings.Contains(err.Error(), "no layer to index") {
		t.Errorf("eStargz-only image: %v", err)
	}
	if _, err := s.OpenLazy(ctx, host+"/no/such:1", LazyOptions{}); !errors.Is(err, ErrRemoteNotFound) {
		t.Errorf("OpenLazy of a missing image: %v", err)
	}
}

// TestLazyForgedIndex: index artifacts pushed by someone else. One whose
// blob does not fit its layer is refused (the layers are fetched whole);
// one whose entry table is forged is caught by the background check, which
// then fails every read of the layer.
func TestLazyForgedIndex(t *testing.T) {
	host := referrersRegistry(t)
	img := testenv.MultiLayerImage(t)
	ctx := context.Background()
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	subject := v1.Descriptor{MediaType: mt, Digest: digestOf(t, img), Size: int64(len(raw))}
	full := openTemp(t)
	pimg, err := full.Pull(ctx, testenv.Push(t, img, host, "lazy/forged:src"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	// blobOf is the index blob and windows blob of x, claiming layer l.
	blobOf := func(l Layer, x *LazyIndex) []indexBlob {
		b, err := x.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		w := x.windowsBlob
		return []indexBlob{{b: b, d: contentDigest(b), layer: l.Digest}, {b: w, d: contentDigest(w), layer: l.Digest, mt: IndexWindowsMediaType}}
	}
	build := func(i int) *LazyIndex {
		x, err := full.BuildLazyIndex(pimg.Layers[i])
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	push := func(repo string, bs ...[]indexBlob) string {
		var blobs []indexBlob
		for _, b := range bs {
			blobs = append(blobs, b...)
		}
		ref := testenv.Push(t, img, host, repo+":1")
		r, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := openTemp(t).pushArtifact(ctx, r.Context(), false, ref, subject, blobs); err != nil {
			t.Fatal(err)
		}
		return ref
	}

	t.Run("refused", func(t *testing.T) {
		// The index of layer 1 claims to be layer 0's.
		ref := push("lazy/refused", blobOf(pimg.Layers[0], build(1)))
		li := openLazy(t, openTemp(t), ref, LazyOptions{NoPrefetch: true})
		if got := kinds(li); !slices.Equal(got, []LazyKind{KindFetched, KindFetched, KindFetched}) {
			t.Fatalf("kinds %v", got)
		}
		if !strings.Contains(li.Notice, "refused") || !strings.Contains(li.Notice, "entry index is of layer") {
			t.Errorf("notice %q", li.Notice)
		}
	})

	t.Run("windows missing or wrong", func(t *testing.T) {
		// An index without its windows blob, and one whose windows blob
		// is another layer's: refused, the layers fetched whole, the
		// notice says why.
		only := blobOf(pimg.Layers[0], build(0))[:1]
		wrongW := blobOf(pimg.Layers[0], build(0))
		w := append(bytes.Clone(wrongW[1].b), 'x')
		wrongW[1] = indexBlob{b: w, d: contentDigest(w), layer: pimg.Layers[0].Digest, mt: IndexWindowsMediaType}
		for repo, want := range map[string]string{
			"lazy/nowindows":    "has no windows blob",
			"lazy/wrongwindows": "windows blob of layer",
		} {
			blobs := only
			if repo == "lazy/wrongwindows" {
				blobs = wrongW
			}
			ref := push(repo, blobs)
			li := openLazy(t, openTemp(t), ref, LazyOptions{NoPrefetch: true})
			if got := kinds(li); got[0] != KindFetched {
				t.Errorf("%s: kinds %v", repo, got)
			}
			if !strings.Contains(li.Notice, "refused") || !strings.Contains(li.Notice, want) {
				t.Errorf("%s: notice %q, want %q in it", repo, li.Notice, want)
			}
		}
	})

	t.Run("bad prefetch list", func(t *testing.T) {
		// A prefetch list that is not JSON, or names absurd ranges, costs
		// the prefetch, not the run: the layers are still lazy.
		for i, junk := range []string{"not json", `{"ranges":[{"layer":"sha256:` + strings.Repeat("a", 64) + `","offset":-5,"length":1}]}`} {
			pl := indexBlob{b: []byte(junk), d: contentDigest([]byte(junk)), mt: IndexPrefetchMediaType}
			ref := push(fmt.Sprintf("lazy/badprefetch%d", i), blobOf(pimg.Layers[0], build(0)), blobOf(pimg.Layers[1], build(1)), blobOf(pimg.Layers[2], build(2)), []indexBlob{pl})
			li := openLazy(t, openTemp(t), ref, LazyOptions{})
			if err := li.WaitPrefetch(); err != nil {
				t.Errorf("prefetch with a bad list: %v", err)
			}
			if got := kinds(li); !slices.Equal(got, []LazyKind{KindIndexed, KindIndexed, KindIndexed}) || len(li.prefetch) != 0 {
				t.Errorf("bad list %q: kinds %v, %d ranges prefetched", junk, got, len(li.prefetch))
			}
			lazyContents(t, li)
		}
	})

	t.Run("forged entries", func(t *testing.T) {
		x := build(0)
		var a, b int = -1, -1
		for i, e := range x.Entries.Entries {
			switch e.Path {
			case "keep/file":
				a = i
			case "data/old":
				b = i
			}
		}
		x.Entries.Entries[a].Path, x.Entries.Entries[b].Path = "data/old", "keep/file"
		ref := push("lazy/forged", blobOf(pimg.Layers[0], x), blobOf(pimg.Layers[1], build(1)), blobOf(pimg.Layers[2], build(2)))
		li := openLazy(t, openTemp(t), ref, LazyOptions{NoPrefetch: true})
		if got := kinds(li); !slices.Equal(got, []LazyKind{KindIndexed, KindIndexed, KindIndexed}) {
			t.Fatalf("kinds %v", got)
		}
		if li.IndexPinned || li.Layers[0].Verified() {
			t.Fatal("an unpinned index counts as verified before the check")
		}
		li.StartBackground()
		err := li.WaitBackground()
		if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "lists other entries") {
			t.Fatalf("background check: %v", err)
		}
		n := li.Tree.Lookup("keep/file")
		if _, err := li.ReadAt(int(n.Layer), make([]byte, n.Size), n.Offset); !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("read after the check failed: %v", err)
		}
		if li.Layers[0].Verified() {
			t.Error("forged layer verified")
		}
	})

	t.Run("honest unpinned", func(t *testing.T) {
		ref := push("lazy/honest", blobOf(pimg.Layers[0], build(0)), blobOf(pimg.Layers[1], build(1)), blobOf(pimg.Layers[2], build(2)))
		s := openTemp(t)
		li := openLazy(t, s, ref, LazyOptions{NoPrefetch: true})
		li.StartBackground()
		if err := li.WaitBackground(); err != nil {
			t.Fatal(err)
		}
		for i, l := range li.Layers {
			if !l.Verified() {
				t.Errorf("layer %d not verified after the background fetch", i)
			}
		}
		li.Close()
		// The check is recorded: a later run trusts the layers at open,
		// and its background fetch neither checks nor reads them again.
		li = openLazy(t, s, ref, LazyOptions{NoPrefetch: true})
		for i, l := range li.Layers {
			if !l.Verified() {
				t.Errorf("second run: layer %d not verified at open", i)
			}
		}
		li.Close()
		// A record that names another diff_id is no record.
		recs, _ := filepath.Glob(filepath.Join(s.root, "lazy", "verified", "*"))
		if len(recs) != len(pimg.Layers) {
			t.Fatalf("%d verified records, want %d", len(recs), len(pimg.Layers))
		}
		for _, r := range recs {
			os.WriteFile(r, []byte("sha256:"+strings.Repeat("1", 64)+"\n"), 0o600)
		}
		li = openLazy(t, s, ref, LazyOptions{NoPrefetch: true})
		if li.Layers[0].Verified() {
			t.Error("a record of another diff_id counted")
		}
	})
}

func TestPruneCache(t *testing.T) {
	s := openTemp(t)
	c, err := remote.OpenCache(s.CacheDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		b := []byte(lazyRandom(uint64(i), 10_000))
		d, err := remote.ParseDigest(contentDigest(b).String())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Put(d, b); err != nil {
			t.Fatal(err)
		}
	}
	freed, err := s.PruneCache(25_000)
	if err != nil || freed < 20_000 {
		t.Fatalf("PruneCache(25000): freed %d, %v", freed, err)
	}
	if freed, err = s.PruneCache(0); err != nil || freed < 10_000 {
		t.Fatalf("PruneCache(0): freed %d, %v", freed, err)
	}
	if n, _ := c.Size(); n != 0 {
		t.Errorf("cache holds %d bytes after clearing", n)
	}
}

// TestLazyPinnedIndex: the store that pushed the index pins it; once the
// image's blobs are gone from it, a lazy open reads by exactly that
// artifact (fetched by digest, no referrers lookup) and trusts it; the
// second open needs nothing from the registry for the index.
func TestLazyPinnedIndex(t *testing.T) {
	host := testenv.Registry(t)
	img := testenv.MultiLayerImage(t)
	ref := testenv.Push(t, img, host, "lazy/pinned:1")
	ctx := context.Background()
	s := openTemp(t)
	res, err := s.PushIndex(ctx, ref, IndexPushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	li := openLazy(t, s, ref, LazyOptions{NoPrefetch: true})
	if got := kinds(li); !slices.Equal(got, []LazyKind{KindLocal, KindLocal, KindLocal}) {
		t.Fatalf("pulled image: kinds %v", got)
	}
	want := lazyContents(t, li)
	li.Close()
	if _, err := s.Remove(ctx, ref, false); err != nil {
		t.Fatal(err)
	}
	if s.hasBlob(res.Artifact, -1) || s.hasBlob(testenv.LayerDigests(t, img)[0], -1) {
		t.Fatal("rmi left the blobs")
	}
	for run := range 2 {
		li := openLazy(t, s, ref, LazyOptions{NoPrefetch: true, NoRecord: true})
		if got := kinds(li); !slices.Equal(got, []LazyKind{KindIndexed, KindIndexed, KindIndexed}) {
			t.Fatalf("run %d: kinds %v", run, got)
		}
		if li.IndexArtifact != res.Artifact || !li.IndexPinned {
			t.Fatalf("run %d: artifact %s pinned %v, want the pinned %s", run, li.IndexArtifact, li.IndexPinned, res.Artifact)
		}
		for i, l := range li.Layers {
			if !l.Verified() {
				t.Errorf("run %d: layer %d of a pinned index not trusted", run, i)
			}
		}
		sameContents(t, lazyContents(t, li), want)
		if st := li.Stats(); (run == 0) != (st.IndexBytes > 0) {
			t.Errorf("run %d: index bytes %d", run, st.IndexBytes)
		}
	}
}

// TestLazyRangeIgnored: a registry that ignores Range requests (answers
// 200 with the whole blob) still serves a lazy image correctly: each blob
// is then downloaded once, in the background of the first read.
func TestLazyRangeIgnored(t *testing.T) {
	host := referrersRegistry(t)
	img := mixedImage(t)
	ref := testenv.Push(t, img, host, "lazy/norange:1")
	full := openTemp(t)
	if _, err := full.PushIndex(context.Background(), ref, IndexPushOptions{}); err != nil {
		t.Fatal(err)
	}
	want := lazyContents(t, openLazy(t, full, ref, LazyOptions{NoPrefetch: true, NoRecord: true}))

	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: host})
	rp.ErrorLog = log.New(io.Discard, "", 0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Range")
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	proxied := strings.Replace(ref, host, strings.TrimPrefix(srv.URL, "http://"), 1)
	li := openLazy(t, openTemp(t), proxied, LazyOptions{NoPrefetch: true})
	sameContents(t, lazyContents(t, li), want)
	if st := li.Stats(); st.RangeIgnored == 0 {
		t.Errorf("stats %+v: the proxy's 200s not seen", st)
	}
}

// TestLazyMovedTagAndDamagedRecords: a tag moved to another image since
// the last lazy run gives the new image (the HEAD sees the new digest),
// and damaged records of earlier runs (learned ranges, tag, found index)
// are ignored, not trusted.
// (With --pull newer, the policy that asks the registry about a tag known
// here; TestLazyPullPolicy covers the others.)
func TestLazyMovedTagAndDamagedRecords(t *testing.T) {
	host := referrersRegistry(t)
	ctx := context.Background()
	one := testenv.ImageOfTars(t, layertest.Tar(layertest.Dir("etc"), layertest.File("etc/v", "one\n")))
	two := testenv.ImageOfTars(t, layertest.Tar(layertest.Dir("etc"), layertest.File("etc/v", "two\n")))
	ref := testenv.Push(t, one, host, "lazy/moving:1")
	if _, err := openTemp(t).PushIndex(ctx, ref, IndexPushOptions{}); err != nil {
		t.Fatal(err)
	}
	s := openTemp(t)
	read := func() string {
		t.Helper()
		li := openLazy(t, s, ref, LazyOptions{Pull: PullNewer})
		li.WaitPrefetch()
		v := lazyContents(t, li)["etc/v"]
		if err := li.Close(); err != nil { // saves what it read
			t.Fatal(err)
		}
		return v
	}
	if got := read(); got != "one\n" {
		t.Fatalf("first run: %q", got)
	}
	// Damage every record the run left.
	for _, dir := range []string{"learned", "tags", "found"} {
		files, _ := filepath.Glob(filepath.Join(s.root, "lazy", dir, "*"))
		if len(files) == 0 {
			t.Fatalf("no record in lazy/%s", dir)
		}
		for _, f := range files {
			if err := os.WriteFile(f, []byte("garbage\x00{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := read(); got != "one\n" {
		t.Fatalf("run with damaged records: %q", got)
	}
	testenv.Push(t, two, host, "lazy/moving:1")
	if _, err := openTemp(t).PushIndex(ctx, ref, IndexPushOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "two\n" {
		t.Fatalf("after the tag moved: %q, want the new image", got)
	}
}

// TestLazyPullPolicy: a tag resolved by an earlier lazy run is taken as it
// was (PullMissing, PullNever) and a warm run whose reads are cached makes
// no request at all, not even the registry's ping; PullNewer notices a
// moved tag and falls back to the digest known here, with a notice, when
// the registry is gone; PullAlways then fails; PullNever refuses an image
// the store does not know.
func TestLazyPullPolicy(t *testing.T) {
	reg := testenv.NewCountingRegistry(t)
	ctx := context.Background()
	one := testenv.ImageOfTars(t, layertest.Tar(layertest.Dir("etc"), layertest.File("etc/v", "one\n")))
	two := testenv.ImageOfTars(t, layertest.Tar(layertest.Dir("etc"), layertest.File("etc/v", "two\n")))
	ref := testenv.Push(t, one, reg.Host, "lazy/policy:1")
	if _, err := openTemp(t).PushIndex(ctx, ref, IndexPushOptions{}); err != nil {
		t.Fatal(err)
	}
	s := openTemp(t)
	read := func(p PullPolicy) (string, int64, string, error) {
		t.Helper()
		var notice bytes.Buffer
		before := reg.Requests()
		li, err := s.OpenLazy(ctx, ref, LazyOptions{Pull: p, Notice: &notice})
		if err != nil {
			return "", reg.Requests() - before, notice.String(), err
		}
		li.WaitPrefetch()
		v := lazyContents(t, li)["etc/v"]
		if err := li.Close(); err != nil {
			t.Fatal(err)
		}
		return v, reg.Requests() - before, notice.String(), nil
	}
	want := func(p PullPolicy, content string, maxRequests int64) {
		t.Helper()
		got, n, _, err := read(p)
		if err != nil || got != content || n > maxRequests {
			t.Fatalf("--pull %s: read %q in %d requests (%v), want %q in at most %d", p, got, n, err, content, maxRequests)
		}
	}
	if got, n, _, err := read(PullMissing); err != nil || got != "one\n" || n == 0 {
		t.Fatalf("first run: %q in %d requests (%v)", got, n, err)
	}
	want(PullMissing, "one\n", 0)
	want("", "one\n", 0) // the default is PullMissing

	testenv.Push(t, two, reg.Host, "lazy/policy:1")
	if _, err := openTemp(t).PushIndex(ctx, ref, IndexPushOptions{}); err != nil {
		t.Fatal(err)
	}
	want(PullMissing, "one\n", 0)
	want(PullNever, "one\n", 0)
	want(PullNewer, "two\n", 1<<10)
	want(PullMissing, "two\n", 0) // the tag as the last run resolved it

	reg.Close()
	if got, _, notice, err := read(PullNewer); err != nil || got != "two\n" || !strings.Contains(notice, "did not answer") {
		t.Errorf("--pull newer, registry gone: %q (%v), notice %q; want the image known here and a warning", got, err, notice)
	}
	if _, _, _, err := read(PullAlways); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("--pull always, registry gone: %v, want the connection error", err)
	}
	want(PullMissing, "two\n", 0)

	if _, err := openTemp(t).OpenLazy(ctx, ref, LazyOptions{Pull: PullNever}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "--pull never") {
		t.Errorf("--pull never, image unknown here: %v, want ErrNotFound naming --pull never", err)
	}
}

// TestLazyDamagedCheckpoints: a pulled gzip layer whose checkpoint file
// went bad makes a lazy open fail, naming the image and `dabba pull`,
// which then rebuilds them from the local blob; a layer without any reads
// decompressed; an open that fails after its layers were opened (an
// eStargz TOC that is not the annotated one) closes them and returns the
// error.
func TestLazyDamagedCheckpoints(t *testing.T) {
	ctx := context.Background()
	host := testenv.Registry(t)
	want := map[string]string{".": "dir", "etc": "dir", "lib": "dir", "etc/v": "one\n", "lib/f": lazyText(3, 900_000)}
	img := testenv.ImageOfTars(t, layertest.Tar(layertest.Dir("etc"), layertest.File("etc/v", want["etc/v"]),
		layertest.Dir("lib"), layertest.File("lib/f", want["lib/f"])))
	ref := testenv.Push(t, img, host, "lazy/ckpt:1")
	s := openTemp(t)
	if _, err := s.Pull(ctx, ref, quiet()); err != nil {
		t.Fatal(err)
	}
	ck := s.CheckpointsPath(testenv.LayerDigests(t, img)[0])
	b, err := os.ReadFile(ck)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(ck, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenLazy(ctx, ref, LazyOptions{}); err == nil || !strings.Contains(err.Error(), "checksum mismatch") || !strings.Contains(err.Error(), "dabba pull "+ref) {
		t.Fatalf("lazy open with damaged checkpoints: %v", err)
	}
	if _, err := s.Pull(ctx, ref, quiet()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Checkpoints(testenv.LayerDigests(t, img)[0]); err != nil {
		t.Fatalf("checkpoints after the pull: %v", err)
	}
	// Rebuilt, then removed (read decompressed).
	for range 2 {
		li := openLazy(t, s, ref, LazyOptions{NoPrefetch: true, NoRecord: true})
		sameContents(t, lazyContents(t, li), want)
		li.Close()
		os.Remove(ck)
	}

	bad := testenv.EStargzLayer(t, layertest.Tar(layertest.Dir("etc"), layertest.File("etc/w", "w\n")))
	bad.Annotations[remote.TOCDigestAnnotation] = "sha256:" + strings.Repeat("ab", 32)
	base, err := imagebuild.LayerFromTar(layertest.Tar(layertest.Dir("x")))
	if err != nil {
		t.Fatal(err)
	}
	bimg, err := mutate.Append(empty.Image, mutate.Addendum{Layer: base}, bad)
	if err != nil {
		t.Fatal(err)
	}
	bref := testenv.Push(t, bimg, host, "lazy/badtoc:1")
	if _, err := openTemp(t).OpenLazy(ctx, bref, LazyOptions{}); err == nil || !strings.Contains(err.Error(), "lazy/badtoc:1") {
		t.Fatalf("lazy open with a wrong TOC digest: %v", err)
	}
}
