package fs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
	lt "github.com/dabba/dabba/layers/layertest"
)

// walk lstats every name below dir, as `find` (or `find -ls`) does.
func walk(b testing.TB, dir string) int {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		n++
		return unix.Lstat(p, &st)
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// readAll reads every regular file below dir, as `tar -cf - dir` does.
func readAll(b *testing.B, dir string) int64 {
	var total int64
	buf := make([]byte, 128<<10)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		total += n
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return total
}

// overlay mounts kernel overlayfs read-only over lower (and an empty
// second lower: overlayfs wants two lowers without an upper).
func overlay(b *testing.B, lower string) string {
	empty, mnt := b.TempDir(), b.TempDir()
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+lower+":"+empty); err != nil {
		testenv.Missing(b, "kernel overlayfs: "+err.Error(), "load the overlay module")
	}
	b.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt
}

// BenchmarkAlpine compares walking and reading the Alpine minirootfs
// through dabba-fs with the same tree extracted on disk (GNU tar) and with
// kernel overlayfs over that extraction. Warm: the kernel's caches are
// filled by the first iteration, as for a container's second look at its
// files. cold-fuse mounts afresh for every iteration.
//
// Compare ns/op of .../fuse with .../disk and .../overlay: the ratio
// disk/fuse is dabba-fs's relative speed (goal ≥ 0.7 of overlay).
func BenchmarkAlpine(b *testing.B) {
	testenv.RequireFUSE(b)
	ref := extractAlpine(b)
	im := alpine(b)
	im.mount(b)
	dirs := map[string]string{"disk": ref, "fuse": im.dir, "overlay": overlay(b, ref)}
	for _, kind := range []string{"disk", "overlay", "fuse"} {
		dir := dirs[kind]
		b.Run("find/"+kind, func(b *testing.B) {
			walk(b, dir)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				walk(b, dir)
			}
		})
		b.Run("readall/"+kind, func(b *testing.B) {
			n := readAll(b, dir)
			b.SetBytes(n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				readAll(b, dir)
			}
		})
	}
	b.Run("find-cold/fuse", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dir := b.TempDir()
			srv, err := Mount(dir, im.fs, MountOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			walk(b, dir)
			b.StopTimer()
			srv.Unmount()
		}
	})
	b.Run("readall-cold/fuse", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dir := b.TempDir()
			srv, err := Mount(dir, im.fs, MountOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			readAll(b, dir)
			b.StopTimer()
			srv.Unmount()
		}
	})
}

// BenchmarkTarFilesRead measures a 128 KiB read (the kernel's largest
// FUSE read) from a layer file with and without the chunk checksums.
func BenchmarkTarFilesRead(b *testing.B) {
	paths := writeLayers(b, lt.Tar(lt.File("big", content(16<<20, 3))))
	for _, noVerify := range []bool{true, false} {
		b.Run(fmt.Sprintf("verify=%v", !noVerify), func(b *testing.B) {
			src, err := OpenTarFiles(paths, TarFilesOptions{NoVerify: noVerify})
			if err != nil {
				b.Fatal(err)
			}
			defer src.Close()
			p := make([]byte, 128<<10)
			b.SetBytes(int64(len(p)))
			for i := 0; i < b.N; i++ {
				off := 512 + int64(i%120)*(128<<10) + 4096 // unaligned to chunks, as tar offsets are
				if _, err := src.ReadAt(0, p, off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// manyEntries is a layer of n names: directories of 100 files with
// library-like names, a symlink and a hard link in each.
func manyEntries(n int) []byte {
	var es []lt.Entry
	for d := 0; len(es) < n; d++ {
		dir := fmt.Sprintf("usr/lib/pkg-%04d", d)
		es = append(es, lt.Dir(dir))
		for f := 0; f < 97 && len(es) < n-2; f++ {
			es = append(es, lt.File(fmt.Sprintf("%s/libexample-%03d.so.1", dir, f), ""))
		}
		es = append(es, lt.Symlink(dir+"/current", "libexample-000.so.1"))
		es = append(es, lt.Hardlink(dir+"/hardlink", dir+"/libexample-000.so.1"))
	}
	return lt.Tar(es...)
}

func heap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkMemoryPerEntry mounts a 100k-entry image, walks all of it (so
// the kernel has looked up every name and holds every inode), and reports
// the server's retained heap per name: the merged tree plus everything the
// filesystem and go-fuse keep. Goal: ≤ 200 bytes per entry. One iteration
// takes seconds: run it with -benchtime 1x.
func BenchmarkMemoryPerEntry(b *testing.B) {
	testenv.RequireFUSE(b)
	paths := writeLayers(b, manyEntries(100000))
	for _, saved := range []bool{false, true} {
		name := "merged"
		if saved {
			name = "saved" // read back from layers.Tree.MarshalBinary, as dabba does after the first run
		}
		b.Run(name, func(b *testing.B) { memoryPerEntry(b, paths, saved) })
	}
}

func memoryPerEntry(b *testing.B, paths []string, saved bool) {
	for i := 0; i < b.N; i++ {
		var data []byte
		if saved {
			data = savedTree(b, paths[0])
		}
		before := heap()
		var tree *layers.Tree
		if saved {
			var err error
			if tree, err = layers.UnmarshalTree(data); err != nil {
				b.Fatal(err)
			}
			data = nil
		} else {
			f, err := os.Open(paths[0])
			if err != nil {
				b.Fatal(err)
			}
			ix, err := layers.IndexLayer(f, "many")
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			if tree, err = layers.Merge([]*layers.Index{ix}); err != nil {
				b.Fatal(err)
			}
			ix = nil
		}
		treeOnly := heap()
		src, err := OpenTarFiles(paths, TarFilesOptions{})
		if err != nil {
			b.Fatal(err)
		}
		fsys, err := New(tree, src, Options{})
		if err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		srv, err := Mount(dir, fsys, MountOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if n := walk(b, dir); n != tree.NumNames() {
			b.Fatalf("walked %d names, the tree has %d", n, tree.NumNames())
		}
		after := heap()
		names := float64(tree.NumNames())
		b.ReportMetric(float64(treeOnly-before)/names, "tree-B/entry")
		b.ReportMetric(float64(after-before)/names, "mounted-B/entry")
		b.ReportMetric(names, "entries")
		srv.Unmount()
		src.Close()
		runtime.KeepAlive(tree)
		runtime.KeepAlive(fsys)
	}
}

// savedTree is the saved merged tree of the layer at path.
func savedTree(b *testing.B, path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ix, err := layers.IndexLayer(f, "many")
	if err != nil {
		b.Fatal(err)
	}
	tree, err := layers.Merge([]*layers.Index{ix})
	if err != nil {
		b.Fatal(err)
	}
	data, err := tree.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// BenchmarkOpenAlpine measures what a mount of the Alpine minirootfs costs
// before the first request: decompressing the blob to a file, indexing it,
// merging, and the checksum pass of OpenTarFiles (with the diff_id).
func BenchmarkOpenAlpine(b *testing.B) {
	tgz := testenv.AlpineTarball(b)
	f, err := os.Open(tgz)
	if err != nil {
		b.Fatal(err)
	}
	r, _, err := layers.Decompress(f)
	if err != nil {
		b.Fatal(err)
	}
	h := sha256.New()
	io.Copy(h, r)
	f.Close()
	diffID := "sha256:" + hex.EncodeToString(h.Sum(nil))
	for _, withIndex := range []bool{false, true} {
		var ix *layers.Index
		if withIndex {
			f, _ := os.Open(tgz)
			r, _, _ := layers.Decompress(f)
			ix, err = layers.IndexLayer(r, "alpine")
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("stored-index=%v", withIndex), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				dir := b.TempDir()
				_, src, err := OpenLayers(dir, []Layer{{Path: tgz, Index: ix, DiffID: diffID}})
				if err != nil {
					b.Fatal(err)
				}
				src.Close()
			}
		})
	}
}
