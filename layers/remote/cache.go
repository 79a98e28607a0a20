package remote

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// DefaultCacheSize is the cap of a Cache opened with maxBytes 0: 10 GiB.
const DefaultCacheSize int64 = 10 << 30

// Digest is a SHA-256 digest: the name of a piece of content in a Cache.
type Digest [sha256.Size]byte

func (d Digest) String() string { return "sha256:" + hex.EncodeToString(d[:]) }

// ParseDigest parses "sha256:<64 hex digits>".
func ParseDigest(s string) (Digest, error) {
	var d Digest
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 2*len(d) {
		return d, fmt.Errorf("digest %q: want sha256:<64 hex digits>", s)
	}
	if _, err := hex.Decode(d[:], []byte(h)); err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	return d, nil
}

// Cache is a content-addressed store of verified pieces (gzip spans,
// eStargz chunks) on local disk, shared by all images, containers and
// processes of a user, and capped in size. A piece is stored under the
// SHA-256 of its content:
//
//	DIR/sha256/ab/abcdef…   the content
//	DIR/tmp/                pieces being written
//
// Writes go to a temporary file renamed into place, so a reader never sees
// a partial piece. Every Get hashes the piece again and drops it on a
// mismatch (a damaged disk, a stray write), so a Cache never yields bytes
// that do not match their name. Recency is the file's modification time,
// refreshed on each hit; when the bytes written by this process push the
// estimated total over the cap, the least recently used pieces are removed
// until the total is under 90% of it. Eviction unlinks files: a process
// reading one keeps its open descriptor, one about to open it sees a miss
// and fetches again. It is safe for concurrent use by goroutines and
// processes.
type Cache struct {
	dir string
	max int64

	mu    sync.Mutex
	total int64 // estimate of the bytes stored; exact after each scan
	now   func() time.Time
}

// OpenCache opens (creating it) the cache in dir, capped at maxBytes
// (DefaultCacheSize when 0).
func OpenCache(dir string, maxBytes int64) (*Cache, error) {
	if maxBytes == 0 {
		maxBytes = DefaultCacheSize
	}
	if maxBytes < 0 {
		return nil, fmt.Errorf("chunk cache %s: negative size cap %d", dir, maxBytes)
	}
	for _, d := range []string{filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("chunk cache: %w", err)
		}
	}
	c := &Cache{dir: dir, max: maxBytes, now: time.Now}
	total, _, err := c.scan()
	if err != nil {
		return nil, err
	}
	c.total = total
	return c, nil
}

// Dir returns the cache's directory.
func (c *Cache) Dir() string { return c.dir }

func (c *Cache) path(d Digest) string {
	h := hex.EncodeToString(d[:])
	return filepath.Join(c.dir, "sha256", h[:2], h)
}

// Get returns the piece named d, or false if the cache does not hold it
// (or held a damaged copy, which it removes).
func (c *Cache) Get(d Digest) ([]byte, bool) {
	p := c.path(d)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, false
	}
	if sha256.Sum256(b) != d {
		os.Remove(p)
		return nil, false
	}
	t := c.now()
	os.Chtimes(p, t, t) // LRU recency; a failure only makes eviction less fair
	return b, true
}

// Has reports whether the cache holds a piece named d, without reading it.
func (c *Cache) Has(d Digest) bool {
	_, err := os.Stat(c.path(d))
	return err == nil
}

// Put stores b, whose SHA-256 must be d (the caller has verified it; Put
// checks again). Storing a piece already present only refreshes it.
func (c *Cache) Put(d Digest, b []byte) error {
	if sha256.Sum256(b) != d {
		return fmt.Errorf("chunk cache %s: content does not match the name %s", c.dir, d)
	}
	p := c.path(d)
	if fi, err := os.Stat(p); err == nil && fi.Size() == int64(len(b)) {
		t := c.now()
		os.Chtimes(p, t, t)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("chunk cache: %w", err)
	}
	if err := c.writeFile(p, b); err != nil {
		return fmt.Errorf("chunk cache: storing %s: %w", d, err)
	}
	t := c.now()
	os.Chtimes(p, t, t)
	c.mu.Lock()
	c.total += int64(len(b))
	over := c.total > c.max
	c.mu.Unlock()
	if over {
		return c.Prune(c.max * 9 / 10)
	}
	return nil
}

type cached struct {
	path  string
	size  int64
	mtime time.Time
}

// scan lists the pieces and their total size, and removes temporary files
// an interrupted writer left more than an hour ago.
func (c *Cache) scan() (int64, []cached, error) {
	var total int64
	var out []cached
	root := filepath.Join(c.dir, "sha256")
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed by a concurrent Prune
			}
			return err
		}
		if de.IsDir() {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return nil
		}
		total += fi.Size()
		out = append(out, cached{p, fi.Size(), fi.ModTime()})
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("chunk cache %s: %w", c.dir, err)
	}
	if ents, err := os.ReadDir(filepath.Join(c.dir, "tmp")); err == nil {
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && c.now().Sub(fi.ModTime()) > time.Hour {
				os.Remove(filepath.Join(c.dir, "tmp", e.Name()))
			}
		}
	}
	return total, out, nil
}

// Size returns the bytes the cache holds now (it scans the directory).
func (c *Cache) Size() (int64, error) {
	total, _, err := c.scan()
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.total = total
	c.mu.Unlock()
	return total, nil
}

// Prune removes the least recently used pieces until the cache holds at
// most maxBytes (for `dabba gc` and when a Put passes the cap).
func (c *Cache) Prune(maxBytes int64) error {
	total, pieces, err := c.scan()
	if err != nil {
		return err
	}
	if total > maxBytes {
		sort.Slice(pieces, func(i, j int) bool { return pieces[i].mtime.Before(pieces[j].mtime) })
		for _, p := range pieces {
			if total <= maxBytes {
				break
			}
			if err := os.Remove(p.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("chunk cache: %w", err)
			}
			total -= p.size
		}
	}
	c.mu.Lock()
	c.total = total
	c.mu.Unlock()
	return nil
}

// Clear removes every piece, and the notes.
func (c *Cache) Clear() error {
	if err := os.RemoveAll(filepath.Join(c.dir, "meta")); err != nil {
		return fmt.Errorf("chunk cache: %w", err)
	}
	return c.Prune(0)
}

// PutNote keeps b as the note name (letters, digits and dashes) beside the
// pieces: what describes cached content without being content-addressed
// (where an eStargz TOC starts in its blob). The cache does not check
// notes; the caller checks what GetNote returns. Notes are small and go
// with Clear.
func (c *Cache) PutNote(name string, b []byte) error {
	if name == "" || strings.ContainsAny(name, "/.") {
		return fmt.Errorf("chunk cache %s: bad note name %q", c.dir, name)
	}
	dir := filepath.Join(c.dir, "meta")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("chunk cache: %w", err)
	}
	if err := c.writeFile(filepath.Join(dir, name), b); err != nil {
		return fmt.Errorf("chunk cache: note %s: %w", name, err)
	}
	return nil
}

// writeFile writes b to p atomically: a temporary file in tmp/, renamed
// into place, so a reader sees all of it or nothing.
func (c *Cache) writeFile(p string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), "piece-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// GetNote returns the note name, if there is one.
func (c *Cache) GetNote(name string) ([]byte, bool) {
	if name == "" || strings.ContainsAny(name, "/.") {
		return nil, false
	}
	b, err := os.ReadFile(filepath.Join(c.dir, "meta", name))
	return b, err == nil
}
