package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/layertest"
)

// esgz is an eStargz blob built with the estargz package from a tar.
type esgz struct {
	tar, blob []byte
	toc       string
	want      *layers.Index // of the original tar
}

func buildEStargz(t testing.TB, tarb []byte, opts ...estargz.Option) *esgz {
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
	want, err := layers.IndexLayer(bytes.NewReader(tarb), "orig")
	if err != nil {
		t.Fatal(err)
	}
	return &esgz{tar: tarb, blob: blob, toc: b.TOCDigest().String(), want: want}
}

func testEStargzTar() []byte {
	return layertest.Tar(
		layertest.Dir("etc", layertest.Mode(0o755)),
		layertest.File("etc/hostname", "box\n", layertest.Owner(0, 0)),
		layertest.File("etc/motd", string(text(11, 5000)), layertest.Owner(1000, 100), layertest.Mode(0o600)),
		layertest.File("etc/empty", ""),
		layertest.File("etc/xattr", "x", layertest.Xattr("user.dabba", "yes")),
		layertest.Dir("usr"),
		layertest.Dir("usr/bin"),
		layertest.File("usr/bin/tool", string(text(12, 300_000)), layertest.Mode(0o4755)),
		layertest.File("usr/bin/same", string(text(12, 300_000))),
		layertest.Hardlink("usr/bin/tool2", "usr/bin/tool"),
		layertest.Symlink("usr/bin/sh", "tool"),
		layertest.Dir("run"),
		layertest.Fifo("run/fifo"),
		layertest.Dir("dev"),
		layertest.Char("dev/null", 1, 3),
		layertest.Dir("var"),
		layertest.Whiteout("var/gone"),
		layertest.Dir("opt"),
		layertest.Opaque("opt"),
		layertest.File("opt/data", string(text(13, 200_000))),
	)
}

// checkEStargz compares the layer read through e with the original tar:
// every entry's metadata and every file's content.
func checkEStargz(t *testing.T, g *esgz, e *EStargz) {
	t.Helper()
	want := map[string]layers.Entry{}
	for _, w := range g.want.Entries {
		want[w.Path+"|"+w.Type.String()] = w
	}
	got := e.Index().Entries
	if len(got) != len(g.want.Entries) {
		t.Errorf("%d entries, want %d", len(got), len(g.want.Entries))
	}
	for _, ge := range got {
		w, ok := want[ge.Path+"|"+ge.Type.String()]
		if !ok {
			t.Errorf("%s (%s): not in the tar", ge.Path, ge.Type)
			continue
		}
		if ge.Mode != w.Mode || ge.UID != w.UID || ge.GID != w.GID || ge.Size != w.Size ||
			ge.Linkname != w.Linkname || ge.Devmajor != w.Devmajor || ge.Devminor != w.Devminor ||
			ge.ModTime/1e9 != w.ModTime/1e9 || fmt.Sprint(ge.Xattrs) != fmt.Sprint(w.Xattrs) {
			t.Errorf("%s: got %+v\nwant %+v", ge.Path, ge, w)
		}
		if ge.Type == layers.TypeReg && ge.Size > 0 {
			p := make([]byte, ge.Size)
			if _, err := e.ReadAt(p, ge.Offset); err != nil {
				t.Fatalf("%s: %v", ge.Path, err)
			}
			if !bytes.Equal(p, g.tar[w.Offset:w.Offset+w.Size]) {
				t.Fatalf("%s: wrong content", ge.Path)
			}
		}
	}
	if _, err := layers.Merge([]*layers.Index{e.Index()}); err != nil {
		t.Fatalf("merging the eStargz index: %v", err)
	}
}

func openEStargz(t *testing.T, url string, g *esgz, cache *Cache) (*EStargz, *Fetcher) {
	t.Helper()
	f, err := NewFetcher(nil, url, hashOf(string(g.blob)), int64(len(g.blob)), fastRetry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	e, err := OpenEStargz(context.Background(), f, g.toc, cache)
	if err != nil {
		t.Fatal(err)
	}
	return e, f
}

func TestEStargz(t *testing.T) {
	g := buildEStargz(t, testEStargzTar(), estargz.WithChunkSize(32<<10),
		estargz.WithPrioritizedFiles([]string{"etc/hostname", "usr/bin/tool"}))
	for _, reg := range registries(t) {
		t.Run(reg.name, func(t *testing.T) {
			u, _ := pushBlob(t, reg.host, "esgz/test", g.blob)
			cache, err := OpenCache(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			e, f := openEStargz(t, u, g, cache)
			open := f.Stats()
			if open.Requests != 1 {
				t.Errorf("footer and TOC took %d requests, want 1", open.Requests)
			}
			if pf := e.PrefetchFiles(); !slices.Equal(pf, []string{"etc/hostname", "usr/bin/tool"}) {
				t.Errorf("prefetch files %q", pf)
			}
			if n := len(e.Chunks("usr/bin/tool")); n != 10 {
				t.Errorf("usr/bin/tool has %d chunks, want 10 of 32 KiB", n)
			}
			if e.Chunks("etc/empty") != nil || e.Chunks("nope") != nil {
				t.Error("chunks for an empty or unknown file")
			}
			if e.TOCDigest().String() != g.toc {
				t.Errorf("TOC digest %s, want %s", e.TOCDigest(), g.toc)
			}

			// One small file: a small part of the blob.
			var motd layers.Entry
			for _, x := range e.Index().Entries {
				if x.Path == "etc/motd" {
					motd = x
				}
			}
			p := make([]byte, motd.Size)
			if _, err := e.ReadAt(p, motd.Offset); err != nil || !bytes.Equal(p, text(11, 5000)) {
				t.Fatalf("etc/motd: %v", err)
			}
			one := f.Stats().BytesFetched - open.BytesFetched
			t.Logf("blob %d bytes; footer+TOC %d bytes; etc/motd (%d bytes) %d bytes", len(g.blob), open.BytesFetched, motd.Size, one)
			if one > 4096 {
				t.Errorf("reading a 5000-byte file fetched %d bytes", one)
			}

			checkEStargz(t, g, e)

			// Again with the same cache: nothing is fetched, the TOC too
			// comes from the cache (a note, checked against the
			// annotation).
			e2, f2 := openEStargz(t, u, g, cache)
			checkEStargz(t, g, e2)
			if s := f2.Stats(); s.Requests != 0 {
				t.Errorf("second reader: %+v, want nothing fetched", s)
			}
			// The TOC is kept twice: as its JSON and in the compact form
			// (tocbin.go). Each is enough alone; a damaged one is not
			// used; with both damaged the footer and TOC are fetched, in
			// two requests when the first does not reach the TOC.
			jsonNote := filepath.Join(cache.Dir(), "meta", "estargz-toc-"+g.toc[len("sha256:"):])
			binNote := filepath.Join(cache.Dir(), "meta", "estargz-tocbin-"+g.toc[len("sha256:"):])
			damage := func(p string) {
				t.Helper()
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				b[len(b)-3] ^= 1
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			reopen := func(what string, requests int64) {
				t.Helper()
				e, f := openEStargz(t, u, g, cache)
				checkEStargz(t, g, e)
				if s := f.Stats(); s.Requests != requests {
					t.Errorf("%s: %+v, want %d requests", what, s, requests)
				}
			}
			damage(binNote)
			reopen("damaged compact TOC", 0) // from the JSON, which rewrites it
			jsonB, _ := os.ReadFile(jsonNote)
			os.Remove(jsonNote)
			reopen("compact TOC alone", 0)
			os.WriteFile(jsonNote, jsonB, 0o600)
			damage(jsonNote)
			damage(binNote)
			defer func(n int64) { tocTailGuess = n }(tocTailGuess)
			tocTailGuess = 100
			reopen("both damaged", 2)
		})
	}
}

func TestEStargzAlpine(t *testing.T) {
	tgz, err := os.ReadFile(testenv.AlpineTarball(t))
	if err != nil {
		t.Fatal(err)
	}
	rc, _, err := layers.Decompress(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tarb, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	g := buildEStargz(t, tarb, estargz.WithPrioritizedFiles([]string{"bin/busybox", "etc/os-release"}))
	for _, reg := range registries(t) {
		t.Run(reg.name, func(t *testing.T) {
			u, _ := pushBlob(t, reg.host, "esgz/alpine", g.blob)
			e, f := openEStargz(t, u, g, nil)
			open := f.Stats()
			var osr layers.Entry
			for _, x := range e.Index().Entries {
				if x.Path == "etc/os-release" && x.Type == layers.TypeReg || x.Path == "usr/lib/os-release" && x.Type == layers.TypeReg {
					osr = x
				}
			}
			p := make([]byte, osr.Size)
			if _, err := e.ReadAt(p, osr.Offset); err != nil || !strings.Contains(string(p), "Alpine") {
				t.Fatalf("os-release: %v %q", err, p)
			}
			s := f.Stats()
			t.Logf("alpine eStargz blob %d bytes, %d entries: footer+TOC %d bytes in %d requests; %s (%d bytes) %d more bytes (%.2f%% of the blob in all)",
				len(g.blob), len(e.Index().Entries), open.BytesFetched, open.Requests, osr.Path, osr.Size, s.BytesFetched-open.BytesFetched,
				100*float64(s.BytesFetched)/float64(len(g.blob)))
			if s.BytesFetched*20 > int64(len(g.blob)) {
				t.Errorf("reading one small file fetched %d of %d bytes", s.BytesFetched, len(g.blob))
			}
			if pf := e.PrefetchFiles(); !slices.Equal(pf, []string{"bin/busybox", "etc/os-release"}) {
				t.Errorf("prefetch files %q", pf)
			}
			if err := e.Prefetch(context.Background()); err != nil {
				t.Fatal(err)
			}
			checkEStargz(t, g, e)
			// Each chunk once; the tail read for the TOC may also hold the
			// last chunks.
			if s := f.Stats(); s.BytesFetched > int64(len(g.blob))+open.BytesFetched {
				t.Errorf("reading every file fetched %d bytes of a %d-byte blob", s.BytesFetched, len(g.blob))
			}
		})
	}
}

// TestEStargzSharedStreams reads a blob whose small files share gzip
// streams (estargz.WithMinChunkSize): chunks with an inner offset.
func TestEStargzSharedStreams(t *testing.T) {
	g := buildEStargz(t, testEStargzTar(), estargz.WithChunkSize(32<<10), estargz.WithMinChunkSize(64<<10))
	u, _ := pushBlob(t, testenvRegistry(t), "esgz/shared", g.blob)
	e, _ := openEStargz(t, u, g, nil)
	inner := 0
	for _, x := range e.Index().Entries {
		for _, c := range e.Chunks(x.Path) {
			if c.InnerOffset > 0 {
				inner++
			}
		}
	}
	if inner == 0 {
		t.Fatal("no chunk with an inner offset: the test does not test them")
	}
	checkEStargz(t, g, e)
	if err := e.PrefetchAll(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestEStargzFaults(t *testing.T) {
	g := buildEStargz(t, testEStargzTar(), estargz.WithChunkSize(32<<10))
	host := testenvRegistry(t)
	_, d := pushBlob(t, host, "esgz/faults", g.blob)
	plain := layertest.Gzip(testEStargzTar())
	_, dp := pushBlob(t, host, "esgz/plain", plain)

	t.Run("wrong-toc-digest", func(t *testing.T) {
		fp := newFaultProxy(t, host)
		f, _ := NewFetcher(nil, fp.blobURL("esgz/faults", d), d, int64(len(g.blob)), fastRetry())
		_, err := OpenEStargz(context.Background(), f, hashOf("other").String(), nil)
		if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), TOCDigestAnnotation) {
			t.Fatalf("error %v: want ErrVerify naming the annotation", err)
		}
		if _, err := OpenEStargz(context.Background(), f, "", nil); err == nil || !strings.Contains(err.Error(), "pull the image whole") {
			t.Fatalf("no annotation: %v", err)
		}
		if _, err := OpenEStargz(context.Background(), f, "md5:x", nil); err == nil {
			t.Fatal("bad annotation accepted")
		}
	})
	t.Run("not-estargz", func(t *testing.T) {
		fp := newFaultProxy(t, host)
		f, _ := NewFetcher(nil, fp.blobURL("esgz/plain", dp), dp, int64(len(plain)), fastRetry())
		if _, err := OpenEStargz(context.Background(), f, g.toc, nil); !errors.Is(err, ErrNotEStargz) {
			t.Fatalf("plain gzip: %v, want ErrNotEStargz", err)
		}
	})
	for _, c := range []struct {
		name  string
		fault func(*faultProxy)
		fails bool
	}{
		{"ignores-range", func(fp *faultProxy) { fp.ignoreRange = true }, false},
		{"rejects-multi-range", func(fp *faultProxy) { fp.rejectMulti = true }, false},
		{"cuts-connections", func(fp *faultProxy) { fp.cut = 3 }, false},
		{"corrupts-once", func(fp *faultProxy) { fp.corrupt = 1 }, false},
		{"corrupts-always", func(fp *faultProxy) { fp.corrupt = -1 }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			fp := newFaultProxy(t, host)
			f, _ := NewFetcher(nil, fp.blobURL("esgz/faults", d), d, int64(len(g.blob)), fastRetry())
			t.Cleanup(func() { f.Close() })
			e, err := OpenEStargz(context.Background(), f, g.toc, nil) // the TOC comes through unharmed
			if err != nil {
				t.Fatal(err)
			}
			fp.set(c.fault)
			var first error
			for _, x := range e.Index().Entries {
				if x.Type != layers.TypeReg || x.Size == 0 {
					continue
				}
				p := make([]byte, x.Size)
				_, err := e.ReadAt(p, x.Offset)
				if err != nil {
					if first == nil {
						first = err
					}
					continue
				}
				var w layers.Entry
				for _, y := range g.want.Entries {
					if y.Path == x.Path {
						w = y
					}
				}
				if !bytes.Equal(p, g.tar[w.Offset:w.Offset+w.Size]) {
					t.Fatalf("%s: WRONG BYTES without an error", x.Path)
				}
			}
			if !c.fails {
				if first != nil {
					t.Fatal(first)
				}
				return
			}
			var ve *VerifyError
			if !errors.As(first, &ve) || !strings.Contains(first.Error(), "chunk") || !strings.Contains(first.Error(), d.String()) {
				t.Fatalf("error %v: want a VerifyError naming the blob and chunk", first)
			}
			t.Logf("error: %v", first)
		})
	}
	t.Run("corrupt-toc", func(t *testing.T) {
		fp := newFaultProxy(t, host)
		fp.set(func(fp *faultProxy) { fp.corrupt, fp.corruptTail = -1, true })
		f, _ := NewFetcher(nil, fp.blobURL("esgz/faults", d), d, int64(len(g.blob)), fastRetry())
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := OpenEStargz(ctx, f, g.toc, nil); err == nil {
			t.Fatal("corrupt TOC accepted")
		} else {
			t.Logf("error: %v", err)
		}
	})
}

// TestEStargzHostileTOC feeds TOCs (already matching their digest: an image
// author can write anything) that must be refused with a clear error.
func TestEStargzHostileTOC(t *testing.T) {
	dg := hashOf("chunk").String()
	reg := func(name string, size, off int64, mod ...func(*estargz.TOCEntry)) *estargz.TOCEntry {
		e := &estargz.TOCEntry{Name: name, Type: "reg", Size: size, Offset: off, ChunkDigest: dg}
		for _, m := range mod {
			m(e)
		}
		return e
	}
	for _, c := range []struct {
		name    string
		entries []*estargz.TOCEntry
		want    error  // errors.Is target, or nil
		msg     string // substring of the error
	}{
		{"escape", []*estargz.TOCEntry{reg("../etc/passwd", 1, 100)}, layers.ErrPathEscapes, "../etc/passwd"},
		{"nul", []*estargz.TOCEntry{reg("a\x00b", 1, 100)}, layers.ErrInvalidPath, ""},
		{"negative-uid", []*estargz.TOCEntry{reg("a", 1, 100, func(e *estargz.TOCEntry) { e.UID = -1 })}, layers.ErrBadHeader, ""},
		{"whiteout-content", []*estargz.TOCEntry{reg(".wh.a", 5, 100)}, layers.ErrBadWhiteout, ""},
		{"whiteout-dir", []*estargz.TOCEntry{{Name: "d/.wh.a/", Type: "dir"}}, layers.ErrBadWhiteout, ""},
		{"socket", []*estargz.TOCEntry{{Name: "s", Type: "socket"}}, layers.ErrUnsupported, "socket"},
		{"bad-mtime", []*estargz.TOCEntry{{Name: "d", Type: "dir", ModTime3339: "yesterday"}}, layers.ErrBadHeader, ""},
		{"root-file", []*estargz.TOCEntry{reg("/", 1, 100)}, layers.ErrInvalidPath, ""},
		{"hardlink-to-root", []*estargz.TOCEntry{{Name: "l", Type: "hardlink", LinkName: "/"}}, layers.ErrBadLink, ""},
		{"empty-symlink", []*estargz.TOCEntry{{Name: "l", Type: "symlink"}}, layers.ErrInvalidPath, ""},
		{"huge", []*estargz.TOCEntry{reg("a", layers.MaxEntrySize+1, 100)}, layers.ErrBadSize, ""},
		{"orphan-chunk", []*estargz.TOCEntry{{Type: "chunk", Offset: 100, ChunkSize: 1, ChunkDigest: dg}}, nil, "chunk without a regular file"},
		{"no-chunk-digest", []*estargz.TOCEntry{reg("a", 10, 100, func(e *estargz.TOCEntry) { e.ChunkDigest, e.ChunkSize = "", 5 })}, nil, "no chunkDigest"},
		{"bad-chunk-digest", []*estargz.TOCEntry{reg("a", 10, 100, func(e *estargz.TOCEntry) { e.ChunkDigest = "sha256:zz" })}, nil, "digest"},
		{"chunk-gap", []*estargz.TOCEntry{
			reg("a", 10, 100, func(e *estargz.TOCEntry) { e.ChunkSize = 4 }),
			{Type: "chunk", Offset: 200, ChunkOffset: 5, ChunkDigest: dg},
		}, nil, "gap"},
		{"chunk-short", []*estargz.TOCEntry{reg("a", 10, 100, func(e *estargz.TOCEntry) { e.ChunkSize = 4 })}, nil, "chunks hold 4 of its 10 bytes"},
		{"chunk-past-toc", []*estargz.TOCEntry{reg("a", 10, 20000)}, nil, "outside the blob's data"},
		{"chunk-in-header", []*estargz.TOCEntry{reg("a", 10, 0)}, nil, "outside the blob's data"},
		{"chunk-past-file", []*estargz.TOCEntry{
			reg("a", 10, 100, func(e *estargz.TOCEntry) { e.ChunkSize = 5 }),
			{Type: "chunk", Offset: 200, ChunkOffset: 5, ChunkSize: 50, ChunkDigest: dg},
		}, nil, "in a 10-byte file"},
		{"ok-file-digest-only", []*estargz.TOCEntry{reg("a", 10, 100, func(e *estargz.TOCEntry) { e.ChunkDigest, e.Digest = "", dg })}, nil, ""},
		{"ok-aufs-skipped", []*estargz.TOCEntry{{Name: ".wh..wh.plnk/x", Type: "dir"}, reg("a", 10, 100)}, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := &EStargz{tocOffset: 10000, byPath: map[string]int{}}
			err := e.load(&estargz.JTOC{Version: 1, Entries: c.entries}, "sha256:layer")
			ok := c.want == nil && c.msg == ""
			if ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if c.want != nil && !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %v, want %v containing %q", err, c.want, c.msg)
			}
		})
	}
}
