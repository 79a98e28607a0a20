package store

import (
	"fmt"

	"github.com/dabba/dabba/layers/remote"
)

// PruneCache shrinks the shared chunk cache of lazy reads (CacheDir) to at
// most keep bytes, least recently used pieces first; keep <= 0 empties it.
// It returns the bytes freed. Running containers lose nothing they hold
// open; a piece they need again is fetched again. For `dabba gc`.
func (s *Store) PruneCache(keep int64) (int64, error) {
	c, err := remote.OpenCache(s.CacheDir(), 0)
	if err != nil {
		return 0, err
	}
	before, err := c.Size()
	if err != nil {
		return 0, fmt.Errorf("chunk cache %s: %w", c.Dir(), err)
	}
	if keep <= 0 {
		err = c.Clear()
	} else {
		err = c.Prune(keep)
	}
	after, serr := c.Size()
	if serr != nil {
		after = before
	}
	if err != nil {
		return before - after, fmt.Errorf("pruning chunk cache %s: %w", c.Dir(), err)
	}
	return before - after, nil
}
