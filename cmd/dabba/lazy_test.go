package main

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/dabba/dabba/internal/imagebuild"
	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers/layertest"
	"github.com/dabba/dabba/layers/remote"
	"github.com/dabba/dabba/store"
)

// lazyFiles is the number of 1 MiB random files of lazyImage's app layer:
// with busybox's layer (about 1 MB compressed, most of which exec reads)
// the image is large enough that reading a small file stays under 5%.
const lazyFiles = 32

// lazyRandomFile is n incompressible bytes, the same for the same seed.
func lazyRandomFile(seed uint64, n int) string {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return string(b)
}

// lazyAppTar is the app layer of lazyImage: etc/small first, then
// lazyFiles random files in opt/.
func lazyAppTar() []byte {
	es := []layertest.Entry{layertest.Dir("etc"), layertest.File("etc/small", "hello\n"), layertest.Dir("opt")}
	for i := range lazyFiles {
		es = append(es, layertest.File(fmt.Sprintf("opt/r%d", i), lazyRandomFile(uint64(i), 1<<20)))
	}
	return layertest.Tar(es...)
}

// busyboxTar is the layer tar of Debian's static busybox.
func busyboxTar(t *testing.T) []byte {
	t.Helper()
	bb, err := imagebuild.BusyboxPath()
	if err != nil {
		testenv.Missing(t, "busybox not found", "install busybox-static, or run `make deps` as root")
	}
	base, err := imagebuild.BusyboxTar(bb)
	if err != nil {
		t.Fatal(err)
	}
	return base
}

// lazyImage is busybox plus the app layer, both gzip, or both eStargz.
func lazyImage(t *testing.T, stargz bool) v1.Image {
	t.Helper()
	tars := [][]byte{busyboxTar(t), lazyAppTar()}
	if !stargz {
		return testenv.ImageOfTars(t, tars...)
	}
	img := testenv.ImageOfLayers(t)
	for _, tb := range tars {
		var err error
		if img, err = mutate.Append(img, testenv.EStargzLayer(t, tb)); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// compressedSize is the sum of img's layer blob sizes.
func compressedSize(t *testing.T, img v1.Image) int64 {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, l := range ls {
		s, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		n += s
	}
	return n
}

// newLazyUser is the test user with what lazy runs need.
func newLazyUser(t *testing.T) *dabbaUser {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: runs the real binary as the test user (-short)")
	}
	testenv.RequireCommand(t, "newuidmap", "uidmap")
	testenv.RequireFUSE(t)
	return newDabbaUser(t)
}

var fetchedLine = regexp.MustCompile(`lazy: fetched (\d+) bytes in (\d+) requests.* index_bytes=(\d+)`)

// lazyRun is `dabba --log-level debug run --network none ARGS...`; it
// returns the outputs and status, and the traffic of the debug line dabba
// logs at exit.
type lazyResult struct {
	out, errs         string
	code              int
	fetched, requests int64
	index             int64 // bytes of the index artifact
}

func (d *dabbaUser) lazyRun(args ...string) lazyResult {
	d.t.Helper()
	out, errs, code := d.run(append([]string{"--log-level", "debug", "run", "--network", "none"}, args...)...)
	r := lazyResult{out: out, errs: errs, code: code}
	m := fetchedLine.FindAllStringSubmatch(errs, -1)
	if len(m) != 1 {
		d.t.Fatalf("dabba run %q: want one line `lazy: fetched N bytes in M requests` on stderr, got %d (exit %d):\n%s", args, len(m), code, errs)
	}
	r.fetched, _ = strconv.ParseInt(m[0][1], 10, 64)
	r.requests, _ = strconv.ParseInt(m[0][2], 10, 64)
	r.index, _ = strconv.ParseInt(m[0][3], 10, 64)
	return r
}

// okRun is lazyRun requiring status 0.
func (d *dabbaUser) okRun(args ...string) lazyResult {
	d.t.Helper()
	r := d.lazyRun(args...)
	if r.code != 0 {
		d.t.Fatalf("dabba run %q: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.out, r.errs)
	}
	return r
}

func md5Hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestRunLazy runs the real binary with --lazy on an image with a dabba
// index and on an eStargz image: the command reads the right bytes, a
// small file costs under 5% of the image, and a second run with the cache
// warm fetches nothing.
func TestRunLazy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stargz   bool
		registry func(testing.TB) string
	}{
		{"indexed", false, testenv.Registry},
		{"indexed-docker-registry", false, testenv.DockerRegistry},
		{"estargz", true, testenv.Registry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newLazyUser(t)
			img := lazyImage(t, tc.stargz)
			ref := testenv.Push(t, img, tc.registry(t), "lazy/app:1")
			if !tc.stargz {
				// The publisher's store, not the runner's: index push
				// pulls the image, which a lazy run would then read
				// from the store.
				newDabbaUser(t).ok("index", "push", "-q", ref)
			}
			total := compressedSize(t, img)

			r := d.okRun("--lazy=nobackground", ref, "cat", "/etc/small")
			if r.out != "hello\n" {
				t.Fatalf("cat /etc/small: %q", r.out)
			}
			if strings.Contains(r.errs, "no lazy index") {
				t.Errorf("notice of layers fetched whole for a lazy image:\n%s", r.errs)
			}
			t.Logf("cold: %d bytes in %d requests of a %d-byte image (%.2f%%); index artifact %d bytes", r.fetched, r.requests, total, 100*float64(r.fetched)/float64(total), r.index)
			if r.fetched == 0 || r.fetched*20 >= total {
				t.Errorf("fetched %d bytes, want some, under 5%% of %d", r.fetched, total)
			}
			if d.hasBlob(testenv.LayerDigests(t, img)[1]) {
				t.Error("the app layer's blob is in the store after a lazy run")
			}

			// Warm: the cache holds what the first run read (and the
			// learned prefetch asks for just that), eStargz TOCs too:
			// nothing is fetched by range, and the index artifact not
			// again.
			r = d.okRun("--lazy=nobackground", ref, "cat", "/etc/small")
			t.Logf("warm: %d bytes in %d requests, index %d bytes", r.fetched, r.requests, r.index)
			if r.out != "hello\n" || r.fetched != 0 || r.requests != 0 || r.index != 0 {
				t.Errorf("warm run: stdout %q, fetched %d bytes in %d requests, index %d bytes; want hello and nothing fetched", r.out, r.fetched, r.requests, r.index)
			}
			learned, err := os.ReadFile(filepath.Join(d.root(), "lazy", "learned", mustDigest(t, img).Hex))
			if err != nil || !strings.Contains(string(learned), "etc/small\n") {
				t.Errorf("learned list %q (%v), want etc/small in it", learned, err)
			}

			// A large file, with the background fetch on: the right bytes.
			r = d.okRun("--lazy", ref, "md5sum", "/opt/r7")
			if got, want := strings.Fields(r.out), md5Hex(lazyRandomFile(7, 1<<20)); len(got) == 0 || got[0] != want {
				t.Errorf("md5sum /opt/r7 = %q, want %s", r.out, want)
			}
			if tc.stargz {
				return
			}
			// Published from this store, the index carries what its
			// runs read: a first run in another store fetches that at
			// start, and its reads then fetch nothing more.
			_, errs, code := d.run("index", "push", ref)
			if code != 0 || !strings.Contains(errs, "With a prefetch list of") {
				t.Fatalf("index push after lazy runs: exit %d, stderr %q", code, errs)
			}
			r = newLazyUser(t).okRun("--lazy=nobackground", ref, "cat", "/etc/small")
			if r.out != "hello\n" || !strings.Contains(r.errs, `from="index artifact"`) {
				t.Errorf("first run with a published prefetch list: stdout %q, stderr:\n%s", r.out, r.errs)
			}
		})
	}
}

func mustDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestRunLazyPlainImage: an image with neither a dabba index nor eStargz
// still runs; one line names the layers fetched whole and how to make
// them lazy. `dabba gc` then empties the chunk cache the runs filled.
func TestRunLazyPlainImage(t *testing.T) {
	d := newLazyUser(t)
	plain := testenv.Push(t, testenv.BusyboxImage(t), testenv.Registry(t), "lazy/plain:1")
	r := d.okRun("--lazy", plain, "cat", "/etc/os-release")
	if !strings.Contains(r.out, "ID=busybox") {
		t.Fatalf("stdout %q", r.out)
	}
	notice := regexp.MustCompile(`(?m)^.*lazy/plain:1: 1 of 1 layers \(sha256:[0-9a-f]+\) have no lazy index and were fetched whole; run ` +
		"`dabba index push " + regexp.QuoteMeta(plain) + "`.*$")
	if n := len(notice.FindAllString(r.errs, -1)); n != 1 {
		t.Errorf("want the notice once on stderr, got it %d times:\n%s", n, r.errs)
	}
	if r.fetched != 0 {
		t.Errorf("fetched %d bytes by range from an image without index", r.fetched)
	}
}

// TestRunLazyCorrupt: a registry that damages the layer's bytes after the
// index was pushed: the command gets EIO, never the damaged bytes, and
// dabba says the registry sent them.
func TestRunLazyCorrupt(t *testing.T) {
	d := newLazyUser(t)
	fr := testenv.NewFaultRegistry(t)
	img := lazyImage(t, false)
	ref := testenv.Push(t, img, fr.Host, "lazy/corrupt:1")
	newDabbaUser(t).ok("index", "push", "-q", ref) // another store: see TestRunLazy
	fr.SetFault(testenv.FaultWrong, testenv.LayerDigests(t, img)[1].String())
	r := d.lazyRun("--lazy=nobackground", ref, "cat", "/etc/small")
	if r.code == 0 || r.out != "" {
		t.Fatalf("cat of a damaged file: exit %d, stdout %q; want a failure and nothing", r.code, r.out)
	}
	if !strings.Contains(r.errs, "Input/output error") {
		t.Errorf("cat did not get EIO:\n%s", r.errs)
	}
	line := regexp.MustCompile("(?m)^dabba run: [0-9]+ reads? of the image's files failed .*the registry of .*lazy/corrupt:1 sent bytes that do not match the image's digests: run again, or fetch the image whole with `dabba pull " + regexp.QuoteMeta(ref) + "`$")
	if !line.MatchString(r.errs) {
		t.Errorf("no line saying the registry sent damaged bytes:\n%s", r.errs)
	}
}

// TestLazyGC: `dabba gc` empties the chunk cache of lazy runs, or keeps
// --cache-size of it, and says so.
func TestLazyGC(t *testing.T) {
	d := newLazyUser(t)
	img := lazyImage(t, true)
	ref := testenv.Push(t, img, testenv.Registry(t), "lazy/gc:1")
	d.okRun("--lazy=nobackground", ref, "md5sum", "/opt/r1", "/opt/r2")
	cached := func() int64 {
		var n int64
		filepath.Walk(filepath.Join(d.root(), "cache", "sha256"), func(_ string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				n += fi.Size()
			}
			return nil
		})
		return n
	}
	before := cached()
	if before < 2<<20 {
		t.Fatalf("chunk cache holds %d bytes after reading 2 MiB", before)
	}
	out := d.ok("gc", "--cache-size", "1m")
	if !strings.Contains(out, "the chunk cache of lazy runs beyond 1.05 MB") {
		t.Errorf("gc --cache-size 1m said %q", out)
	}
	if n := cached(); n > 1<<20 || n == 0 {
		t.Errorf("after gc --cache-size 1m the cache holds %d bytes", n)
	}
	out = d.ok("gc")
	if !strings.Contains(out, "the chunk cache of lazy runs:") {
		t.Errorf("gc said %q", out)
	}
	if n := cached(); n != 0 {
		t.Errorf("after gc the cache holds %d bytes", n)
	}
	if out := d.ok("gc"); !strings.Contains(out, "Nothing to remove") {
		t.Errorf("second gc said %q", out)
	}
	if errs := d.fails("gc", "--cache-size", "lots"); !strings.Contains(errs, `--cache-size "lots"`) {
		t.Errorf("gc --cache-size lots: %q", errs)
	}
}

// TestRunLazyFlagErrors: --lazy with a rootfs it cannot use is refused
// before any work, with status 125.
func TestRunLazyFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--lazy", "--rootfs", "overlay", "img"}, "--lazy needs --rootfs fuse"},
		{[]string{"run", "--lazy", "--rootfs", "/tmp", "true"}, "--lazy needs --rootfs fuse"},
		{[]string{"run", "--lazy=sometimes", "img"}, `--lazy="sometimes"`},
		{[]string{"run", "--lazy", "--cache-size", "huge", "img"}, `--cache-size "huge"`},
	} {
		var out, errb strings.Builder
		code := realMain(append([]string{"--root", t.TempDir()}, tc.args...), &out, &errb)
		if code != exitUsageStatus || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("dabba %q: status %d, stderr %q; want %d and %q", tc.args, code, errb.String(), exitUsageStatus, tc.want)
		}
	}
}

// TestRunLazyNoFUSE: without a usable /dev/fuse, --lazy fails before any
// network work and says what to do.
func TestRunLazyNoFUSE(t *testing.T) {
	dev := fuseDevice
	t.Cleanup(func() { fuseDevice = dev })
	fuseDevice = filepath.Join(t.TempDir(), "no-fuse")
	var out, errb strings.Builder
	code := realMain([]string{"--root", t.TempDir(), "run", "--network", "none", "--lazy", "127.0.0.1:1/no/such:1", "true"}, &out, &errb)
	if code != exitDabba || !strings.Contains(errb.String(), "--lazy: open "+fuseDevice) || !strings.Contains(errb.String(), "run without --lazy") {
		t.Errorf("status %d, stderr %q; want %d and the reason", code, errb.String(), exitDabba)
	}
}

func TestGCSummary(t *testing.T) {
	for _, tc := range []struct {
		blobs       int
		bytes       int64
		freed, keep int64
		want        string
	}{
		{0, 0, 0, 0, "Nothing to remove"},
		{0, 0, 3 << 20, 0, "Removed the chunk cache of lazy runs: freed 3.15 MB"},
		{2, 1 << 20, 1 << 20, 1 << 20, "Removed 2 blobs, the chunk cache of lazy runs beyond 1.05 MB: freed 2.1 MB"},
	} {
		got := gcSummary(&store.GCStats{Blobs: tc.blobs, Bytes: tc.bytes}, tc.freed, tc.keep)
		if got != tc.want {
			t.Errorf("gcSummary(%d blobs, %d bytes, cache %d keep %d) = %q, want %q", tc.blobs, tc.bytes, tc.freed, tc.keep, got, tc.want)
		}
	}
}

// TestRunLazyOpenFails: a lazy image whose layers fail to open, which
// happens while the container's namespaces are set up (here an eStargz
// layer whose TOC is not the annotated one), stops the run before its
// command with one line naming the image and layer, and leaves no
// container behind.
func TestRunLazyOpenFails(t *testing.T) {
	d := newLazyUser(t)
	layer := testenv.EStargzLayer(t, busyboxTar(t))
	layer.Annotations[remote.TOCDigestAnnotation] = "sha256:" + strings.Repeat("0", 64)
	img, err := mutate.Append(testenv.ImageOfLayers(t), layer)
	if err != nil {
		t.Fatal(err)
	}
	ref := testenv.Push(t, img, testenv.Registry(t), "lazy/badtoc:1")
	out, errs, code := d.run("run", "--lazy", "--network", "none", ref, "echo", "ran")
	if code != 125 || out != "" || !strings.HasPrefix(errs, "dabba run: "+ref) || strings.Contains(errs, "fuse:") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Errorf("exit %d, stdout %q, stderr %q; want 125 and one line naming the image", code, out, errs)
	}
	if left := d.storeFiles("containers"); len(left) != 0 {
		t.Errorf("containers left: %q", left)
	}
}
