package remote

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func testPiece(i int, n int) ([]byte, Digest) {
	b := text(uint64(i), n)
	return b, sha256.Sum256(b)
}

func TestCache(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenCache(dir, 3500)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1_000_000, 0)
	c.now = func() time.Time { clock = clock.Add(time.Second); return clock }

	a, da := testPiece(1, 1000)
	b, db := testPiece(2, 1000)
	d3, dc := testPiece(3, 1000)
	for _, p := range []struct {
		b []byte
		d Digest
	}{{a, da}, {b, db}, {d3, dc}} {
		if err := c.Put(p.d, p.b); err != nil {
			t.Fatal(err)
		}
	}
	if got, ok := c.Get(da); !ok || !bytes.Equal(got, a) { // a is now the most recent
		t.Fatal("a not cached")
	}
	if n, _ := c.Size(); n != 3000 {
		t.Fatalf("size %d, want 3000", n)
	}
	// A fourth piece passes the cap: the least recently used (b) goes.
	e, de := testPiece(4, 1000)
	if err := c.Put(de, e); err != nil {
		t.Fatal(err)
	}
	if c.Has(db) || !c.Has(da) || !c.Has(dc) || !c.Has(de) {
		t.Fatalf("after eviction: a %v b %v c %v e %v; want b gone", c.Has(da), c.Has(db), c.Has(dc), c.Has(de))
	}
	if n, _ := c.Size(); n != 3000 {
		t.Fatalf("size %d after eviction, want 3000", n)
	}

	// Content under the wrong name is refused, and a damaged file is a
	// miss, removed.
	if err := c.Put(da, b); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("Put under the wrong name: %v", err)
	}
	if err := os.WriteFile(c.path(dc), []byte("damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get(dc); ok || c.Has(dc) {
		t.Fatal("damaged piece served or kept")
	}

	// Another process's view of the same directory.
	c2, err := OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := c2.Get(de); !ok || !bytes.Equal(got, e) {
		t.Fatal("piece not shared between cache instances")
	}
	if err := c2.Prune(1000); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Size(); n != 1000 || !c.Has(de) {
		t.Fatalf("after Prune(1000): %d bytes, e kept %v", n, c.Has(de))
	}
	if err := c.Clear(); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Size(); n != 0 {
		t.Fatalf("after Clear: %d bytes", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
	if _, err := OpenCache(dir, -1); err == nil {
		t.Fatal("negative cap accepted")
	}
}

// TestCacheConcurrent runs writers, readers and evictions of two Cache
// values (as two processes would) on one directory with a cap that forces
// evictions: a Get gives the right bytes or a miss, never others.
func TestCacheConcurrent(t *testing.T) {
	dir := t.TempDir()
	var cs []*Cache
	for i := 0; i < 2; i++ {
		c, err := OpenCache(dir, 20_000)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	const n = 40
	contents := make([][]byte, n)
	digests := make([]Digest, n)
	for i := range contents {
		contents[i], digests[i] = testPiece(100+i, 1000+i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cs[g%2]
			for k := 0; k < 200; k++ {
				i := (g*7 + k*13) % n
				if k%3 == 0 {
					if err := c.Put(digests[i], contents[i]); err != nil {
						errs <- err
						return
					}
					continue
				}
				if b, ok := c.Get(digests[i]); ok && !bytes.Equal(b, contents[i]) {
					errs <- fmt.Errorf("piece %d: wrong bytes", i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n, _ := cs[0].Size(); n > 20_000+8*2000 {
		t.Fatalf("cache holds %d bytes, cap 20000", n)
	}
}

func TestParseDigest(t *testing.T) {
	_, d := testPiece(1, 10)
	got, err := ParseDigest(d.String())
	if err != nil || got != d {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range []string{"", "sha256:", "sha512:" + strings.Repeat("0", 64), "sha256:" + strings.Repeat("g", 64), "sha256:00"} {
		if _, err := ParseDigest(bad); err == nil {
			t.Errorf("ParseDigest(%q) accepted", bad)
		}
	}
}
