package store

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Summary describes an image for listings (dabba images).
type Summary struct {
	Names          []string // repo:tag and repo@digest names
	ID             string   // config digest hex
	ManifestDigest v1.Hash
	Created        time.Time // from the config; zero when absent
	Pulled         time.Time
	Size           int64 // uncompressed
}

// Images lists the images in the store, newest first.
func (s *Store) Images() ([]Summary, error) {
	db, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	var out []Summary
	for md, r := range db.Images {
		h, err := v1.NewHash(md)
		if err != nil {
			return nil, fmt.Errorf("image database: bad manifest digest %q", md)
		}
		sum := Summary{Names: slices.Clone(r.Names), ManifestDigest: h, Pulled: r.Pulled, Size: r.Size}
		if ch, err := v1.NewHash(r.Config); err == nil {
			sum.ID = ch.Hex
			if b, err := s.readBlob(ch); err == nil {
				if cfg, err := v1.ParseConfigFile(bytes.NewReader(b)); err == nil {
					sum.Created = cfg.Created.Time
				}
			}
		}
		sort.Strings(sum.Names)
		out = append(out, sum)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return strings.Join(out[i].Names, ",") < strings.Join(out[j].Names, ",")
	})
	return out, nil
}

// isShortID reports whether ref is an image id or a prefix of one (3 to
// 64 lowercase hex digits, "sha256:" allowed in front).
func isShortID(ref string) bool {
	h := strings.TrimPrefix(ref, "sha256:")
	return validName(h, 3, 64, isLowerHex, isLowerHex)
}

// Lookup finds an image in the local store by name[:tag], name@digest, or
// full or short (unique prefix) image ID. It never contacts a registry.
// Errors wrap ErrNotFound (or ErrAmbiguous).
func (s *Store) Lookup(ref string) (*Image, error) {
	db, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	md, name, err := resolve(db, ref)
	if err != nil {
		return nil, err
	}
	return s.load(db, md, name)
}

// resolve finds the manifest digest and name an image reference means.
func resolve(db *refsDB, ref string) (manifest, name string, err error) {
	if norm, perr := Normalize(ref); perr == nil {
		for md, r := range db.Images {
			if slices.Contains(r.Names, norm) {
				return md, norm, nil
			}
		}
		// repo@digest of a manifest (or index) known under another name
		// of the same repository.
		if repo, dg, isDigest := splitName(norm); isDigest {
			for md, r := range db.Images {
				if md != dg && r.Index != dg {
					continue
				}
				for _, n := range r.Names {
					if rp, _, _ := splitName(n); rp == repo {
						return md, norm, nil
					}
				}
			}
		}
	}
	if isShortID(ref) {
		id := strings.TrimPrefix(ref, "sha256:")
		var found []string
		for md, r := range db.Images {
			if strings.HasPrefix(strings.TrimPrefix(r.Config, "sha256:"), id) {
				found = append(found, md)
			}
		}
		switch len(found) {
		case 1:
			return found[0], "", nil
		case 0:
		default:
			// Several manifests may share a config: same image ID.
			cfg := db.Images[found[0]].Config
			same := true
			for _, md := range found {
				same = same && db.Images[md].Config == cfg
			}
			if !same {
				return "", "", fmt.Errorf("image ID %q: %w: it matches %d images; give more digits", ref, ErrAmbiguous, len(found))
			}
			sort.Strings(found)
			return found[0], "", nil
		}
	}
	return "", "", fmt.Errorf("%s: %w; pull it first (dabba pull %s), or see `dabba images`", ref, ErrNotFound, ref)
}

// load builds the Image of the record md.
func (s *Store) load(db *refsDB, md, name string) (*Image, error) {
	r := db.Images[md]
	h, err := v1.NewHash(md)
	if err != nil {
		return nil, fmt.Errorf("image database: bad manifest digest %q", md)
	}
	ch, err := v1.NewHash(r.Config)
	if err != nil {
		return nil, fmt.Errorf("image database: bad config digest %q", r.Config)
	}
	names := slices.Clone(r.Names)
	sort.Strings(names)
	if name == "" && len(names) > 0 {
		name = names[0]
	}
	img := &Image{Name: name, Names: names, ID: ch.Hex, ManifestDigest: h, Size: r.Size}
	if r.Index != "" {
		ih, err := v1.NewHash(r.Index)
		if err == nil {
			img.IndexDigest = &ih
		}
	}
	b, err := s.readBlob(ch)
	if err != nil {
		return nil, fmt.Errorf("image %s: config missing from the store (%w); pull it again", name, err)
	}
	img.Config, err = v1.ParseConfigFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("image %s: config %s: %w", name, ch, err)
	}
	for _, li := range r.Layers {
		d, err1 := v1.NewHash(li.Digest)
		diff, err2 := v1.NewHash(li.DiffID)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("image database: bad layer of %s", name)
		}
		img.Layers = append(img.Layers, Layer{Digest: d, DiffID: diff, Size: li.Size, MediaType: types.MediaType(li.MediaType)})
	}
	return img, nil
}

// RawManifest returns the manifest of img as stored.
func (s *Store) RawManifest(img *Image) ([]byte, error) {
	return s.readBlob(img.ManifestDigest)
}

// RawConfig returns the config of img as stored.
func (s *Store) RawConfig(img *Image) ([]byte, error) {
	return s.readBlob(v1.Hash{Algorithm: "sha256", Hex: img.ID})
}

// RemoveResult says what Remove did.
type RemoveResult struct {
	Untagged []string // names removed
	Deleted  string   // image ID whose last name went, or ""
}

// Remove removes an image name (like podman rmi): name[:tag] or
// name@digest untags that name; an image ID removes all names of the image
// when force is set or when it has only one. When no name is left, the
// image's manifest, config and the blobs, indexes and extracted layers no
// other image uses are deleted. Errors wrap ErrNotFound for an unknown
// image.
func (s *Store) Remove(ctx context.Context, ref string, force bool) (*RemoveResult, error) {
	res := &RemoveResult{}
	err := s.updateRefs(ctx, func(db *refsDB) error {
		md, name, err := resolve(db, ref)
		if err != nil {
			return err
		}
		r := db.Images[md]
		if name != "" && slices.Contains(r.Names, name) {
			r.Names = slices.DeleteFunc(r.Names, func(n string) bool { return n == name })
			res.Untagged = []string{name}
		} else {
			if len(r.Names) > 1 && !force {
				names := slices.Clone(r.Names)
				sort.Strings(names)
				return fmt.Errorf("image %s has several names (%s): remove them by name, or use --force", ref, strings.Join(names, ", "))
			}
			res.Untagged = r.Names
			r.Names = nil
		}
		if len(r.Names) == 0 {
			res.Deleted = strings.TrimPrefix(r.Config, "sha256:")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if res.Deleted != "" {
		if _, err := s.collect(ctx, false); err != nil {
			return res, fmt.Errorf("image %s untagged, but removing its files: %w", ref, err)
		}
	}
	return res, nil
}
