package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// staleSpanTemp is the age from which gc takes the temporary file of an
// inflated span for the leftover of a killed writer.
const staleSpanTemp = 10 * time.Minute

// GCStats says what GC removed.
type GCStats struct {
	Blobs     int // blobs no image refers to
	Indexes   int // layer indexes of such blobs
	LayerDirs int // extracted layers no image refers to (and failed extractions)
	// InflatedDirs are the inflated spans of such layers (InflatedDir).
	InflatedDirs int
	MergedTrees  int // saved merged trees of such layers (MergedTree), and lazy images' (full gc)
	Partials     int // partial downloads
	TempFiles    int // temporary files of killed writers
	// Containers counts the directories of containers whose dabba died
	// (see RemoveDeadContainers); running containers' are never touched.
	Containers int
	Bytes      int64
	// InUse lists extracted layer dirs kept although unreferenced, because
	// a running container holds them (see HoldLayers).
	InUse []string
}

// GC removes the directories of dead containers (RemoveDeadContainers),
// then every blob, index, extracted layer directory (of any id-map
// variant), partial download and temporary file that no image in the store
// refers to. It waits for running pulls to finish first, and keeps what
// running containers use. Directories holding files of subordinate ids are
// removed with RemoveFunc when set.
func (s *Store) GC(ctx context.Context) (*GCStats, error) {
	return s.collect(ctx, true)
}

// collect is GC; full=false (for rmi) keeps partial downloads, which the
// user may resume, and leaves containers alone.
func (s *Store) collect(ctx context.Context, full bool) (*GCStats, error) {
	sl, err := s.storeLock(ctx, true)
	if err != nil {
		return nil, err
	}
	defer sl.Unlock()
	db, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	blobs := map[string]bool{}   // hex of every referenced blob
	indexes := map[string]bool{} // hex of layer blobs
	dirs := map[string]bool{}    // hex of diff_ids
	merged := map[string]bool{}  // keys of the images' merged trees
	for md, r := range db.Images {
		var ls []Layer
		for _, l := range r.Layers {
			if h, err := v1.NewHash(l.Digest); err == nil {
				ls = append(ls, Layer{Digest: h})
			}
		}
		merged[mergedKey(ls)] = true
		for _, d := range []string{md, r.Index, r.Config} {
			if h, err := v1.NewHash(d); err == nil {
				blobs[h.Hex] = true
			}
		}
		for _, l := range r.Layers {
			if h, err := v1.NewHash(l.Digest); err == nil {
				blobs[h.Hex] = true
				indexes[h.Hex] = true
			}
			if h, err := v1.NewHash(l.DiffID); err == nil {
				dirs[h.Hex] = true
			}
		}
	}
	st := &GCStats{}
	var errs []error

	removeFile := func(p string) bool {
		fi, err := os.Lstat(p)
		if err != nil {
			return false
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
			return false
		}
		st.Bytes += fi.Size()
		return true
	}

	each := func(dir string, fn func(name string)) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			return
		}
		for _, e := range ents {
			fn(e.Name())
		}
	}

	if full {
		// First: a dead container no longer holds its layers.
		errs = append(errs, s.sweepContainers(st)...)
		s.sweepContainerLocks()
	}
	each(filepath.Join(s.root, "blobs", "sha256"), func(n string) {
		if !blobs[n] && removeFile(filepath.Join(s.root, "blobs", "sha256", n)) {
			st.Blobs++
			os.Remove(s.lockPath("blob-" + n))
		}
	})
	each(filepath.Join(s.root, "index", "sha256"), func(n string) {
		hx, sidecar := strings.CutSuffix(n, diffIDSuffix)
		if !sidecar {
			hx, sidecar = strings.CutSuffix(n, checkpointsSuffix)
		}
		if !sidecar {
			hx, sidecar = strings.CutSuffix(n, chunkSumsSuffix)
		}
		if !indexes[hx] && removeFile(filepath.Join(s.root, "index", "sha256", n)) && !sidecar {
			st.Indexes++
		}
	})
	each(filepath.Join(s.root, "layers"), func(n string) {
		// <hex> or <hex>-<variant>: held through layer-<hex>.lock, whatever
		// the variant. Other names (.tmp-*: a killed extraction) go.
		hexName, ok := layerDirDiffID(n)
		if ok && dirs[hexName] {
			return
		}
		p := filepath.Join(s.root, "layers", n)
		if hexName != "" {
			l, ok, err := tryLockFile(s.lockPath("layer-"+hexName), true)
			if err != nil {
				errs = append(errs, err)
				return
			}
			if !ok {
				st.InUse = append(st.InUse, p)
				return
			}
			defer l.Unlock()
		}
		size := treeSize(p)
		if err := s.removeTree(p); err != nil {
			errs = append(errs, err)
			return
		}
		st.LayerDirs++
		st.Bytes += size
		if hexName != "" {
			os.Remove(s.lockPath("layer-" + hexName))
		}
	})
	// Inflated spans of layers no image refers to (a running FUSE mount
	// keeps its open blob; a span it writes after this is harmless).
	each(filepath.Join(s.root, "inflated"), func(n string) {
		if indexes[n] {
			// A span writer killed mid-write leaves its temporary
			// file; one still writing has touched its file within
			// the last few seconds.
			p := filepath.Join(s.root, "inflated", n)
			each(p, func(f string) {
				fp := filepath.Join(p, f)
				if fi, err := os.Lstat(fp); err == nil && strings.HasPrefix(f, ".tmp-") && time.Since(fi.ModTime()) > staleSpanTemp && removeFile(fp) {
					st.TempFiles++
				}
			})
			return
		}
		p := filepath.Join(s.root, "inflated", n)
		size := treeSize(p)
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
			return
		}
		st.InflatedDirs++
		st.Bytes += size
	})
	// Saved merged trees of layer lists no image has, and (a full gc)
	// every lazy image's, which its next run merges again.
	each(filepath.Join(s.root, "merged"), func(n string) {
		if !merged[n] && removeFile(filepath.Join(s.root, "merged", n)) {
			st.MergedTrees++
		}
	})
	if full {
		each(filepath.Join(s.root, "lazy", "trees"), func(n string) {
			if removeFile(filepath.Join(s.root, "lazy", "trees", n)) {
				st.MergedTrees++
			}
		})
	}
	each(s.tmpDir(), func(n string) {
		p := filepath.Join(s.tmpDir(), n)
		switch {
		case strings.HasSuffix(n, ".partial"):
			if full && removeFile(p) {
				st.Partials++
			}
		default:
			if removeFile(p) {
				st.TempFiles++
			}
		}
	})
	// Locks of blobs that are gone (a failed download leaves its lock file),
	// and extraction locks (free: extraction holds the store lock shared).
	each(filepath.Join(s.root, "locks"), func(n string) {
		if strings.HasPrefix(n, "extract-") {
			os.Remove(filepath.Join(s.root, "locks", n))
			return
		}
		if hx, ok := strings.CutPrefix(n, "blob-"); ok {
			hx = strings.TrimSuffix(hx, ".lock")
			if !blobs[hx] {
				if _, err := os.Stat(s.partialPath(v1.Hash{Algorithm: "sha256", Hex: hx})); err != nil {
					os.Remove(filepath.Join(s.root, "locks", n))
				}
			}
		}
	})
	slog.Debug("gc done", "stage", "gc", "blobs", st.Blobs, "indexes", st.Indexes, "layerDirs", st.LayerDirs, "partials", st.Partials, "containers", st.Containers, "bytes", st.Bytes)
	if len(errs) > 0 {
		return st, fmt.Errorf("gc of %s: %w", s.root, errors.Join(errs...))
	}
	return st, nil
}

func treeSize(p string) int64 {
	var n int64
	filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// HoldLayers marks extracted layers as in use by a running container until
// release is called (or the process exits): GC keeps them even when no
// image refers to them any more. Call it after LayerDir, from the process
// that lives as long as the container.
func (s *Store) HoldLayers(ctx context.Context, diffIDs []v1.Hash) (release func(), err error) {
	sl, err := s.storeLock(ctx, false)
	if err != nil {
		return nil, err
	}
	defer sl.Unlock()
	var held []*fileLock
	release = func() {
		for _, l := range held {
			l.Unlock()
		}
		held = nil
	}
	for _, d := range diffIDs {
		if err := checkHash(d); err != nil {
			release()
			return nil, err
		}
		l, err := lockFile(ctx, s.lockPath("layer-"+d.Hex), false)
		if err != nil {
			release()
			return nil, err
		}
		held = append(held, l)
	}
	return release, nil
}
