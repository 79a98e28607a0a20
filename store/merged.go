package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dabba/dabba/layers"
)

// Merged trees: merged/<key> holds the merged tree (layers.Tree, saved with
// MarshalBinary) of an image's list of layers, key the SHA-256 of their
// digests, so that serving the image again (dabba-fs, at every container
// start) reads one file instead of every layer index and merging them.
// The layers are content-addressed, so a saved tree never goes stale; gc
// removes those of layer lists no image has.

// mergedKey is the name of the saved tree of layer list ls.
func mergedKey(ls []Layer) string {
	h := sha256.New()
	fmt.Fprintln(h, "dabba merged tree")
	for _, l := range ls {
		fmt.Fprintln(h, l.Digest.String())
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Store) mergedPath(ls []Layer) string {
	return filepath.Join(s.root, "merged", mergedKey(ls))
}

// MergedTree returns the merged tree of img's layers saved by
// SaveMergedTree. Errors wrap fs.ErrNotExist when there is none, and
// layers.ErrTreeFile when the saved one cannot be read back.
func (s *Store) MergedTree(img *Image) (*layers.Tree, error) {
	return s.readTree(s.mergedPath(img.Layers), img.Name, len(img.Layers))
}

// SaveMergedTree saves t, the merged tree of img's layers, for MergedTree.
func (s *Store) SaveMergedTree(img *Image, t *layers.Tree) error {
	return s.saveTree(s.mergedPath(img.Layers), t)
}

// readTree reads the saved tree at p of image name, which has nlayers
// layers.
func (s *Store) readTree(p, name string, nlayers int) (*layers.Tree, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("merged tree of image %s: %w", name, err)
	}
	t, err := layers.UnmarshalTree(b)
	if err != nil {
		return nil, fmt.Errorf("merged tree of image %s (%s): %w", name, p, err)
	}
	if len(t.Layers) != nlayers {
		return nil, fmt.Errorf("merged tree of image %s (%s): %d layers, the image has %d: %w", name, p, len(t.Layers), nlayers, layers.ErrTreeFile)
	}
	return t, nil
}

func (s *Store) saveTree(p string, t *layers.Tree) error {
	b, err := t.MarshalBinary()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return s.writeFileAtomic(p, b)
}

// Lazy images' merged trees: lazy/trees/<key> holds the merged tree of a
// lazily opened image's layer indexes, key the SHA-256 of where each index
// was read from (LazyImage.treePath; an image whose indexes are all the
// store's own uses merged/ instead), so a warm lazy run reads one file instead
// of merging the indexes again (33 ms of the bench's large image). The
// sources are content-addressed, so a saved tree never goes stale; gc
// removes them all (the next lazy run merges again).
func (s *Store) lazyTreePath(key string) string {
	return filepath.Join(s.root, "lazy", "trees", key)
}
