package fs

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/dabba/dabba/internal/testenv"
	lt "github.com/dabba/dabba/layers/layertest"
)

// pushLayers is an image a walker reads: directories of files of assorted
// sizes (empty, small, larger than pushFile), with symlinks and nested
// directories between them, as a real /usr has.
func pushLayers() (tars [][]byte, files map[string]string) {
	files = map[string]string{}
	var es []lt.Entry
	for d := range 6 {
		dir := fmt.Sprintf("usr/d%d", d)
		es = append(es, lt.Dir(dir))
		for i := range 30 {
			name := fmt.Sprintf("%s/f%02d", dir, i)
			size := (i*7919 + d*104729) % (48 << 10)
			switch {
			case i == 3:
				size = 0
			case i == 17 && d%2 == 0:
				size = pushFile + 300<<10 // the rest comes by READ
			}
			files[name] = content(size, byte(i+d))
			es = append(es, lt.File(name, files[name]))
			if i%10 == 5 {
				es = append(es, lt.Symlink(fmt.Sprintf("%s/l%02d", dir, i), name))
				es = append(es, lt.Dir(fmt.Sprintf("%s/sub%02d", dir, i)))
				sub := fmt.Sprintf("%s/sub%02d/g", dir, i)
				files[sub] = content(5000+i, byte(d))
				es = append(es, lt.File(sub, files[sub]))
			}
		}
	}
	files["usr/zbig/blob"] = content(9<<20+123, 9)
	es = append(es, lt.Dir("usr/zbig"), lt.File("usr/zbig/blob", files["usr/zbig/blob"]))
	return [][]byte{lt.Tar(es...)}, files
}

// readSlowly reads file p as a reader that does something with what it
// reads (tar writes it out) does: 64 KiB at a time, with a pause.
func readSlowly(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b []byte
	chunk := make([]byte, 64<<10)
	for {
		n, err := f.Read(chunk)
		b = append(b, chunk[:n]...)
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// walkRead reads every regular file under root in walk order, as tar -c
// does, and checks its content.
func walkRead(t *testing.T, root string, files map[string]string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := readSlowly(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if string(b) != files[rel] {
			t.Errorf("%s: read %d bytes that differ from the image's %d", rel, len(b), len(files[rel]))
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPushAhead: a reader walking the tree in order finds most files
// already in the page cache, with the right bytes; a walk that only lists
// (find) or reads out of order gets nothing pushed.
func TestPushAhead(t *testing.T) {
	tars, files := pushLayers()

	t.Run("walk in order", func(t *testing.T) {
		im := mountImage(t, Options{PushAhead: true}, tars...)
		pollHack(t, filepath.Join(im.dir, "usr/d0/f00"))
		n := walkRead(t, im.dir, files)
		st := im.fs.Stats()
		t.Logf("%d files read: %d READ requests, %d bytes pushed", n, st.Reads, st.Pushed)
		if n != len(files) {
			t.Errorf("read %d files, want %d", n, len(files))
		}
		// Without pushes, every non-empty file costs at least one READ
		// (see "off"); a push loses a race with the reader now and then
		// on a busy machine.
		most := int64(n) / 5
		if raceEnabled {
			most = int64(n) / 2
		}
		if st.Pushed == 0 || st.Reads > most {
			t.Errorf("%d READ requests for %d files, %d bytes pushed: want most files pushed", st.Reads, n, st.Pushed)
		}
		if e := im.errors(); e != "" {
			t.Errorf("errors: %s", e)
		}
		// Read again: from the cache. On a loaded machine (CI runs the
		// packages in parallel) a page or two of the 9 MiB file are now
		// and then asked for again: pushes and the kernel's readahead
		// meet on its pages, and which leaves one missing is not
		// understood yet. The bytes are right either way (walkRead).
		time.Sleep(200 * time.Millisecond)
		before := im.fs.Stats().Reads
		walkRead(t, im.dir, files)
		if st := im.fs.Stats(); st.Reads-before > 8 {
			t.Errorf("a second walk sent %d READ requests, want (almost) none", st.Reads-before)
		}
	})

	t.Run("list only", func(t *testing.T) {
		im := mountImage(t, Options{PushAhead: true}, tars...)
		err := filepath.WalkDir(im.dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil {
				_, err = d.Info()
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if st := im.fs.Stats(); st.Pushed != 0 || st.Reads != 0 {
			t.Errorf("listing pushed %d bytes, read %d times: want nothing", st.Pushed, st.Reads)
		}
	})

	t.Run("out of order", func(t *testing.T) {
		im := mountImage(t, Options{PushAhead: true}, tars...)
		pollHack(t, filepath.Join(im.dir, "usr/d0/f00"))
		var names []string
		for name := range files {
			names = append(names, name)
		}
		slices.Sort(names)
		slices.Reverse(names)
		for _, name := range names {
			b, err := os.ReadFile(filepath.Join(im.dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != files[name] {
				t.Errorf("%s: wrong bytes", name)
			}
		}
		// Only the large files, read from start to end, are pushed
		// ahead within themselves.
		var large int64
		for _, c := range files {
			if len(c) > pushFile {
				large += int64(len(c))
			}
		}
		if st := im.fs.Stats(); st.Pushed > large {
			t.Errorf("reading backwards pushed %d bytes, want at most the %d of the large files", st.Pushed, large)
		}
	})

	t.Run("one large file", func(t *testing.T) {
		im := mountImage(t, Options{PushAhead: true}, tars...)
		pollHack(t, filepath.Join(im.dir, "usr/d0/f00"))
		b, err := readSlowly(filepath.Join(im.dir, "usr/zbig/blob"))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != files["usr/zbig/blob"] {
			t.Error("usr/zbig/blob: wrong bytes")
		}
		// The kernel's readahead alone asks in 128 KiB requests: 72.
		st := im.fs.Stats()
		t.Logf("9 MiB read sequentially: %d READ requests, %d bytes pushed", st.Reads, st.Pushed)
		if st.Reads > 36 {
			t.Errorf("%d READ requests for a 9 MiB file read through, want the pushes to spare most", st.Reads)
		}
	})

	t.Run("off", func(t *testing.T) {
		im := mountImage(t, Options{}, tars...)
		pollHack(t, filepath.Join(im.dir, "usr/d0/f00"))
		n := walkRead(t, im.dir, files)
		if st := im.fs.Stats(); st.Pushed != 0 || st.Reads < int64(n)-6 {
			t.Errorf("without PushAhead: %d bytes pushed, %d READ requests for %d files", st.Pushed, st.Reads, n)
		}
	})
}

// TestPushAheadCorrupt: a push never puts bytes a layer cannot vouch for
// in the page cache; the walker gets EIO for the damaged file and the
// right bytes for the others.
func TestPushAheadCorrupt(t *testing.T) {
	tars, files := pushLayers()
	im := newImage(t, Options{PushAhead: true}, tars...)
	victim := "usr/d1/f09"
	n := im.tree.Lookup(victim)
	if n == nil {
		t.Fatal(victim + " not in the tree")
	}
	// Damage the layer under the victim's bytes after the checksums were
	// taken at open.
	f, err := os.OpenFile(im.paths[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("XXXXXXXX"), n.Offset+10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	testenv.RequireFUSE(t)
	im.mount(t)
	pollHack(t, filepath.Join(im.dir, "usr/d0/f00"))
	var bad []string
	err = filepath.WalkDir(im.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(im.dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			bad = append(bad, rel)
			return nil
		}
		if string(b) != files[rel] {
			t.Errorf("%s: wrong bytes", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(bad, victim) {
		t.Errorf("files that failed to read: %v; want %s among them", bad, victim)
	}
}
