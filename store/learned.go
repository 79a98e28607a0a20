package store

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// What a lazy run learns for the next ones. Each run records, in the
// order of their first read:
//
//   - the files it read (paths of the merged tree): lazy/learned/<manifest-hex>,
//     one per line; prefetched whole by path (eStargz layers, older records);
//   - the ranges of the layers it read, in pages (learnBlock), joined:
//     lazy/learned/<manifest-hex>.json (a prefetchList). A prefetch by
//     range fetches what the command touched of a large file (the pages of
//     a binary it maps), not the whole file.
//
// `dabba index push` publishes the ranges with the index, so that a first
// lazy run on another machine fetches them at start as well.

// Bounds of the record of one run: the files a start reads, not all a
// long-lived container does.
const (
	maxLearnedFiles = 4096
	maxLearnedBytes = 256 << 20
	// learnBlock is the granularity of the ranges recorded: a page. The
	// reads the kernel sends a FUSE server already carry its readahead.
	learnBlock = 4 << 10
	// maxLearnedRanges bounds a prefetch list read from disk or a
	// registry.
	maxLearnedRanges = 1 << 16
)

// learnedRange is a range of one layer's uncompressed content (the
// offsets of layers.Entry): Length bytes at Offset.
type learnedRange struct {
	Layer  v1.Hash `json:"layer"`
	Offset int64   `json:"offset"`
	Length int64   `json:"length"`
}

// prefetchList is the JSON of a learned ranges file and of the index
// artifact's prefetch blob.
type prefetchList struct {
	Ranges []learnedRange `json:"ranges"`
	// Files are the paths read, for people reading the list.
	Files []string `json:"files,omitempty"`
}

// check refuses a list too large to be a start's, or with nonsense in it.
func (pl *prefetchList) check() error {
	if len(pl.Ranges) > maxLearnedRanges || len(pl.Files) > maxLearnedFiles {
		return fmt.Errorf("prefetch list of %d ranges and %d files is too long", len(pl.Ranges), len(pl.Files))
	}
	var total int64
	for _, r := range pl.Ranges {
		if r.Offset < 0 || r.Length <= 0 || r.Length > maxLearnedBytes || checkHash(r.Layer) != nil {
			return fmt.Errorf("prefetch list has a bad range %+v", r)
		}
		total += r.Length
	}
	if total > maxLearnedBytes {
		return fmt.Errorf("prefetch list names %d bytes, more than %d", total, maxLearnedBytes)
	}
	return nil
}

// block is one recorded block: layer number and block number.
type block struct {
	layer int
	n     int64
}

// record notes what a read of layer ll at off (n bytes) touched: the file
// holding off, the first time it is read, and the blocks of the range.
func (li *LazyImage) record(layer int, ll *LazyLayer, off int64, n int) {
	li.recMu.Lock()
	defer li.recMu.Unlock()
	if n > 0 && li.recBytes < maxLearnedBytes {
		for b := off / learnBlock; b <= (off+int64(n)-1)/learnBlock; b++ {
			k := block{layer, b}
			if !li.recBlocks[k] {
				li.recBlocks[k] = true
				li.recOrder = append(li.recOrder, k)
				li.recBytes += learnBlock
			}
		}
	}
	ents := ll.Index.Entries
	i := sort.Search(len(ll.files), func(i int) bool {
		e := &ents[ll.files[i]]
		return e.Offset+e.Size > off
	})
	if i == len(ll.files) || ents[ll.files[i]].Offset > off {
		return
	}
	key := [2]int{layer, ll.files[i]}
	if li.recSeen[key] || len(li.recFiles) >= maxLearnedFiles {
		return
	}
	li.recSeen[key] = true
	li.recFiles = append(li.recFiles, ents[ll.files[i]].Path)
}

// Recorded returns the files read so far, in the order of their first read.
func (li *LazyImage) Recorded() []string {
	li.recMu.Lock()
	defer li.recMu.Unlock()
	return append([]string(nil), li.recFiles...)
}

// recordedRanges returns the blocks read so far as ranges, in the order
// of their first read, neighbours of one layer joined.
func (li *LazyImage) recordedRanges() []learnedRange {
	li.recMu.Lock()
	defer li.recMu.Unlock()
	var out []learnedRange
	for _, b := range li.recOrder {
		d := li.Layers[b.layer].Digest
		if k := len(out) - 1; k >= 0 && out[k].Layer == d && out[k].Offset+out[k].Length == b.n*learnBlock {
			out[k].Length += learnBlock
			continue
		}
		out = append(out, learnedRange{Layer: d, Offset: b.n * learnBlock, Length: learnBlock})
	}
	return out
}

// learnedPath is lazy/learned/<manifest-hex>: the files the lazy runs of
// an image read, one path per line, in order of first read; the ranges
// are in the same name with .json.
func (s *Store) learnedPath(md v1.Hash) string {
	return filepath.Join(s.root, "lazy", "learned", md.Hex)
}

// LearnedFiles returns the files earlier lazy runs of the image with
// manifest md read, in order of first read (nil when none).
func (s *Store) LearnedFiles(md v1.Hash) []string { return s.readLearned(md) }

func (s *Store) readLearned(md v1.Hash) []string {
	b, err := os.ReadFile(s.learnedPath(md))
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// readLearnedRanges returns the ranges earlier lazy runs read (nil when
// none, or when the file is damaged).
func (s *Store) readLearnedRanges(md v1.Hash) []learnedRange {
	b, err := os.ReadFile(s.learnedPath(md) + ".json")
	if err != nil {
		return nil
	}
	var pl prefetchList
	if json.Unmarshal(b, &pl) != nil || pl.check() != nil {
		return nil
	}
	return pl.Ranges
}

// saveLearned merges this run's reads after the earlier runs' (new ones at
// the end) and writes the lists that grew.
func (li *LazyImage) saveLearned() error {
	if !li.recording {
		return nil
	}
	p := li.s.learnedPath(li.Image.ManifestDigest)
	files := li.Recorded()
	seen := map[string]bool{}
	out := make([]string, 0, len(li.learned)+len(files))
	for _, f := range append(append([]string(nil), li.learned...), files...) {
		if !seen[f] && !strings.Contains(f, "\n") && len(out) < maxLearnedFiles {
			seen[f] = true
			out = append(out, f)
		}
	}
	ranges := mergeRanges(li.learnedRanges, li.recordedRanges())
	if len(out) == len(li.learned) && len(ranges) == len(li.learnedRanges) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("recording the files %s read: %w", li.Image.Name, err)
	}
	if len(out) != len(li.learned) {
		if err := li.s.writeFileAtomic(p, []byte(strings.Join(out, "\n")+"\n")); err != nil {
			return fmt.Errorf("recording the files %s read: %w", li.Image.Name, err)
		}
	}
	if len(ranges) != len(li.learnedRanges) {
		b, err := json.Marshal(prefetchList{Ranges: ranges})
		if err != nil {
			return err
		}
		if err := li.s.writeFileAtomic(p+".json", b); err != nil {
			return fmt.Errorf("recording the ranges %s read: %w", li.Image.Name, err)
		}
	}
	return nil
}

// mergeRanges returns old followed by the parts of add old does not
// cover, within the bounds of a record.
func mergeRanges(old, add []learnedRange) []learnedRange {
	type key struct {
		d v1.Hash
		n int64
	}
	have := map[key]bool{}
	var total int64
	for _, r := range old {
		for b := r.Offset / learnBlock; b*learnBlock < r.Offset+r.Length; b++ {
			have[key{r.Layer, b}] = true
		}
		total += r.Length
	}
	out := append([]learnedRange(nil), old...)
	for _, r := range add {
		for b := r.Offset / learnBlock; b*learnBlock < r.Offset+r.Length; b++ {
			if have[key{r.Layer, b}] || total >= maxLearnedBytes || len(out) >= maxLearnedRanges {
				continue
			}
			have[key{r.Layer, b}] = true
			total += learnBlock
			if k := len(out) - 1; k >= len(old) && out[k].Layer == r.Layer && out[k].Offset+out[k].Length == b*learnBlock {
				out[k].Length += learnBlock
				continue
			}
			out = append(out, learnedRange{Layer: r.Layer, Offset: b * learnBlock, Length: learnBlock})
		}
	}
	return out
}

// coalesceGap is the largest gap between two ranges of a layer that a
// prefetch list fills in: fetching a gap of up to 32 KiB costs about what
// starting a second range costs (a 32 KiB gzip window, about 12 KB, and
// the bytes from the block boundary before it).
const coalesceGap = 32 << 10

// coalesce joins the ranges of each layer that lie less than gap apart
// (or overlap), keeping the order of first reads: each joined range takes
// the place of its earliest part.
func coalesce(rs []learnedRange, gap int64) []learnedRange {
	type iv struct {
		lo, hi int64
		first  int // index in rs of its earliest part
	}
	byLayer := map[v1.Hash][]iv{}
	var order []v1.Hash
	for i, r := range rs {
		if _, ok := byLayer[r.Layer]; !ok {
			order = append(order, r.Layer)
		}
		byLayer[r.Layer] = append(byLayer[r.Layer], iv{r.Offset, r.Offset + r.Length, i})
	}
	type out struct {
		r     learnedRange
		first int
	}
	var joined []out
	for _, d := range order {
		ivs := byLayer[d]
		sort.Slice(ivs, func(a, b int) bool { return ivs[a].lo < ivs[b].lo })
		cur := ivs[0]
		for _, v := range ivs[1:] {
			if v.lo <= cur.hi+gap {
				cur.hi = max(cur.hi, v.hi)
				cur.first = min(cur.first, v.first)
				continue
			}
			joined = append(joined, out{learnedRange{d, cur.lo, cur.hi - cur.lo}, cur.first})
			cur = v
		}
		joined = append(joined, out{learnedRange{d, cur.lo, cur.hi - cur.lo}, cur.first})
	}
	sort.SliceStable(joined, func(a, b int) bool { return joined[a].first < joined[b].first })
	res := make([]learnedRange, len(joined))
	for i, j := range joined {
		res[i] = j.r
	}
	return res
}
