package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Sentinel errors; errors of this package wrap them where they apply.
var (
	// ErrNotFound reports an image that is not in the local store.
	ErrNotFound = errors.New("store: image not known")
	// ErrDigestMismatch reports content whose sha256 is not the digest it
	// was fetched as (or a layer whose tar is not its diff_id).
	ErrDigestMismatch = errors.New("store: content does not match its digest")
	// ErrRemoteNotFound reports an image (or blob) the registry does not
	// have.
	ErrRemoteNotFound = errors.New("store: image not found in the registry")
	// ErrAmbiguous reports a short image ID that matches several images.
	ErrAmbiguous = errors.New("store: ambiguous image ID")
)

// Store is an image store below one root directory (see the package
// documentation for its layout). It is safe for concurrent use by several
// goroutines and several processes.
type Store struct {
	root string

	// RemoveFunc, when set, removes a directory tree the calling user
	// cannot remove alone: extracted layers hold subdirectories owned by
	// subordinate ids (files owned by them go with their parent directory,
	// directories owned by them may refuse chmod and unlink of their
	// entries). cmd/dabba sets it to a function that removes the tree
	// inside a user namespace mapping those ids. Without it, such trees
	// are left in place and the error says so.
	RemoveFunc func(path string) error

	mu sync.Mutex
	// containers are the locks of the containers whose directories this
	// process made (ContainerDir), by id.
	containers map[string]*fileLock
}

// Image is an image in the store.
type Image struct {
	// Name is the normalised reference it was asked for, e.g.
	// docker.io/library/alpine:latest; Names are all its names.
	Name  string
	Names []string
	// ID is the config digest's hex, as podman's IMAGE ID.
	ID             string
	ManifestDigest v1.Hash
	// IndexDigest is the multi-arch index the manifest was chosen from, if
	// any.
	IndexDigest *v1.Hash
	Config      *v1.ConfigFile
	// Layers are bottom first.
	Layers []Layer
	// Size is the sum of the layers' uncompressed sizes.
	Size int64
}

// Layer is one layer of an image.
type Layer struct {
	Digest    v1.Hash // of the compressed blob
	DiffID    v1.Hash // of the uncompressed tar
	Size      int64   // of the compressed blob
	MediaType types.MediaType
}

// Open opens the store at root, creating its directories as needed.
func Open(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("opening store: no root directory given")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("store root %s: %w", root, err)
	}
	s := &Store{root: abs}
	for _, d := range []string{
		filepath.Join("blobs", "sha256"), filepath.Join("index", "sha256"),
		"layers", "containers", "tmp", "locks",
	} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("creating store directory %s: %w (choose another with --root)", filepath.Join(abs, d), err)
		}
	}
	return s, nil
}

// Root returns the store's root directory.
func (s *Store) Root() string { return s.root }

// BlobPath returns the path of a verified blob (it may not exist).
func (s *Store) BlobPath(h v1.Hash) string {
	return filepath.Join(s.root, "blobs", h.Algorithm, h.Hex)
}

// IndexPath returns the path of the entry index of the layer blob h (a
// layers.Index in binary form; it may not exist).
func (s *Store) IndexPath(h v1.Hash) string {
	return filepath.Join(s.root, "index", h.Algorithm, h.Hex)
}

func (s *Store) tmpDir() string              { return filepath.Join(s.root, "tmp") }
func (s *Store) lockPath(name string) string { return filepath.Join(s.root, "locks", name+".lock") }
func (s *Store) partialPath(h v1.Hash) string {
	return filepath.Join(s.root, "tmp", h.Hex+".partial")
}

// storeLock takes the store-wide lock: shared for work that adds to the
// store, exclusive for work that removes from it.
func (s *Store) storeLock(ctx context.Context, exclusive bool) (*fileLock, error) {
	return lockFile(ctx, s.lockPath("store"), exclusive)
}

// writeFileAtomic writes data to path through a temporary file in tmp/,
// fsynced and renamed into place.
func (s *Store) writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(s.tmpDir(), "write-*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := commitFile(tmp, path); err != nil {
		return err
	}
	ok = true
	return nil
}

// commitFile renames a synced temporary file into place and syncs the
// directory, so the new name survives a crash.
func commitFile(tmp, path string) error {
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s into place: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// hasBlob reports whether the verified blob h is present with the given
// size (size < 0: any size).
func (s *Store) hasBlob(h v1.Hash, size int64) bool {
	fi, err := os.Stat(s.BlobPath(h))
	return err == nil && fi.Mode().IsRegular() && (size < 0 || fi.Size() == size)
}

// readBlob reads a (small) verified blob.
func (s *Store) readBlob(h v1.Hash) ([]byte, error) {
	b, err := os.ReadFile(s.BlobPath(h))
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", h, err)
	}
	return b, nil
}

// LayerDir returns the directory holding the layer diffID extracted in
// kernel-overlayfs form for the id mapping named variant. Extraction in a
// user namespace puts each file's ownership on host ids that depend on the
// id map (the full subordinate map, the single-id map, another range after
// /etc/subuid changed), so each map gets its own copy: layers/<hex>-<variant>
// (layers/<hex> for variant ""). A variant is 1 to 64 of a-z, 0-9 and '-'
// that the caller derives from its map.
//
// When absent LayerDir makes a temporary directory inside the store, calls
// extract(ctx, tmp) to fill it (from BlobPath of the layer), and renames it
// into place atomically; concurrent callers for the same layer and variant
// wait on a lock and share the result. A failed extract leaves nothing
// behind (or, when the partial tree cannot be removed, a directory gc will
// remove).
func (s *Store) LayerDir(ctx context.Context, diffID v1.Hash, variant string, extract func(ctx context.Context, tmp string) error) (string, error) {
	if err := checkHash(diffID); err != nil {
		return "", fmt.Errorf("layer dir: %w", err)
	}
	if variant != "" && !isVariant(variant) {
		return "", fmt.Errorf("layer dir of %s: variant %q: want 1 to 64 of a-z, 0-9 and '-'", diffID, variant)
	}
	key := diffID.Hex
	if variant != "" {
		key += "-" + variant
	}
	dir := filepath.Join(s.root, "layers", key)
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return dir, nil
	}
	sl, err := s.storeLock(ctx, false)
	if err != nil {
		return "", err
	}
	defer sl.Unlock()
	// Not layer-<hex>.lock: running containers hold that one shared
	// (HoldLayers), and extracting another variant must not wait for them.
	l, err := lockFile(ctx, s.lockPath("extract-"+key), true)
	if err != nil {
		return "", err
	}
	defer l.Unlock()
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return dir, nil
	}
	tmp := filepath.Join(s.root, "layers", ".tmp-"+key+"-"+randomHex(4))
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return "", fmt.Errorf("extracting layer %s: %w", diffID, err)
	}
	if err := extract(ctx, tmp); err != nil {
		if rerr := s.removeTree(tmp); rerr != nil {
			return "", fmt.Errorf("extracting layer %s: %w (and removing %s: %v)", diffID, err, tmp, rerr)
		}
		return "", fmt.Errorf("extracting layer %s: %w", diffID, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		s.removeTree(tmp)
		return "", fmt.Errorf("extracting layer %s: %w", diffID, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return "", err
	}
	return dir, nil
}

// isVariant reports whether v can name an extracted layer's variant: 1 to
// 64 lowercase letters, digits and '-'.
func isVariant(v string) bool {
	ok := func(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' }
	return validName(v, 1, 64, ok, ok)
}

// isHex64 reports whether h is 64 lowercase hex digits.
func isHex64(h string) bool { return validName(h, 64, 64, isLowerHex, isLowerHex) }

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// validName reports whether s has min to max bytes, the first passing
// first and the others rest. (Regular expressions with such counted
// repetitions cost every start of dabba, its container's init included,
// 2 ms of package initialization to compile.)
func validName(s string, min, max int, first, rest func(byte) bool) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if i == 0 && !first(s[i]) || i > 0 && !rest(s[i]) {
			return false
		}
	}
	return true
}

// layerDirDiffID returns the diff_id hex of an extracted layer directory's
// name (<hex> or <hex>-<variant>); ok is false for other names.
func layerDirDiffID(name string) (hx string, ok bool) {
	if len(name) < 64 || !isHex64(name[:64]) {
		return "", false
	}
	if len(name) == 64 {
		return name, true
	}
	if name[64] != '-' || !isVariant(name[65:]) {
		return "", false
	}
	return name[:64], true
}

// removeTree removes a directory tree: first plainly, then after making
// every directory the user owns writable, then with RemoveFunc.
func (s *Store) removeTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	filepath.WalkDir(p, func(q string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o700) // fails for dirs owned by subordinate ids; RemoveFunc handles those
		}
		return nil
	})
	err := os.RemoveAll(p)
	if err == nil {
		return nil
	}
	if s.RemoveFunc != nil {
		if ferr := s.RemoveFunc(p); ferr != nil {
			return fmt.Errorf("removing %s: %w", p, ferr)
		}
		if _, serr := os.Lstat(p); serr == nil {
			return fmt.Errorf("removing %s: still present after RemoveFunc", p)
		}
		return nil
	}
	return fmt.Errorf("removing %s: %w (it holds directories owned by subordinate ids: remove it with `podman unshare rm -rf %s`, or as root)", p, err, p)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// checkHash refuses a digest that could not name a file safely.
func checkHash(h v1.Hash) error {
	if h.Algorithm != "sha256" || !isHex64(h.Hex) {
		return fmt.Errorf("unsupported digest %q: want sha256:<64 hex digits>", h.String())
	}
	return nil
}

func shortDigest(h v1.Hash) string {
	s := h.String()
	if i := strings.IndexByte(s, ':'); i >= 0 && len(s) > i+13 {
		return s[:i+13]
	}
	return s
}

// InflatedDir is where the FUSE mounts of gzip layer d keep its inflated
// spans (fs.Blob.SpanDir), shared by every container of the store; `dabba
// gc` removes it with the layer.
func (s *Store) InflatedDir(d v1.Hash) string {
	return filepath.Join(s.root, "inflated", d.Hex)
}
