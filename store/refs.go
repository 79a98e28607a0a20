package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// refsVersion is the version of refs.json this code writes and reads.
const refsVersion = 1

// refsDB is refs.json: every image in the store, by manifest digest.
type refsDB struct {
	Version int                `json:"version"`
	Images  map[string]*record `json:"images"` // key: manifest digest
}

// record is one image (one platform manifest) in refs.json. A name is in at
// most one record; a record without names is removed.
type record struct {
	Names  []string    `json:"names"`           // repo:tag and repo@digest
	Index  string      `json:"index,omitempty"` // index digest it came from
	Config string      `json:"config"`          // config digest
	Layers []layerInfo `json:"layers"`
	Size   int64       `json:"size"` // uncompressed, summed over layers
	Pulled time.Time   `json:"pulled"`
}

type layerInfo struct {
	Digest    string `json:"digest"`
	DiffID    string `json:"diffID"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType"`
	TarSize   int64  `json:"tarSize"`
}

func (s *Store) refsPath() string { return filepath.Join(s.root, "refs.json") }

// readRefs reads refs.json; renames are atomic, so no lock is needed to
// read a consistent version.
func (s *Store) readRefs() (*refsDB, error) {
	db := &refsDB{Version: refsVersion, Images: map[string]*record{}}
	b, err := os.ReadFile(s.refsPath())
	if errors.Is(err, os.ErrNotExist) {
		return db, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading image database: %w", err)
	}
	if err := json.Unmarshal(b, db); err != nil {
		return nil, fmt.Errorf("image database %s is corrupt: %w (move it away and pull again)", s.refsPath(), err)
	}
	if db.Version != refsVersion {
		return nil, fmt.Errorf("image database %s has version %d, this dabba reads %d", s.refsPath(), db.Version, refsVersion)
	}
	if db.Images == nil {
		db.Images = map[string]*record{}
	}
	return db, nil
}

// updateRefs applies fn to refs.json under the refs lock and writes the
// result atomically. fn returning an error leaves the file unchanged.
func (s *Store) updateRefs(ctx context.Context, fn func(db *refsDB) error) error {
	l, err := lockFile(ctx, s.lockPath("refs"), true)
	if err != nil {
		return err
	}
	defer l.Unlock()
	db, err := s.readRefs()
	if err != nil {
		return err
	}
	if err := fn(db); err != nil {
		return err
	}
	for k, r := range db.Images {
		if len(r.Names) == 0 {
			delete(db.Images, k)
		}
	}
	b, err := json.MarshalIndent(db, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding image database: %w", err)
	}
	return s.writeFileAtomic(s.refsPath(), append(b, '\n'))
}

// setName points name at the manifest digest, taking it from any other
// record.
func (db *refsDB) setName(name, manifest string) {
	for k, r := range db.Images {
		if k == manifest {
			continue
		}
		r.Names = slices.DeleteFunc(r.Names, func(n string) bool { return n == name })
	}
	r := db.Images[manifest]
	if !slices.Contains(r.Names, name) {
		r.Names = append(r.Names, name)
	}
}
