package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/sandbox/cgroups"
	"github.com/dabba/dabba/store"
)

func newGCCmd(g *globals) *command {
	fs := pflag.NewFlagSet("gc", pflag.ContinueOnError)
	cacheSize := fs.String("cache-size", "0", "keep this much of the chunk cache of lazy runs, the most recently used (e.g. 500m); 0 empties it")
	return &command{
		name:  "gc",
		usage: "[--cache-size SIZE]",
		short: "remove dead containers, blobs, layers and partial downloads no image uses, and the chunk cache of lazy runs",
		flags: fs,
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) != 0 {
				return &exitError{code: exitUsageStatus, err: errors.New("gc takes no arguments")}
			}
			keep := int64(0)
			if *cacheSize != "0" {
				n, err := cgroups.ParseMemory(*cacheSize)
				if err != nil || n < 0 {
					return &exitError{code: exitUsageStatus, err: fmt.Errorf("--cache-size %q: want a size such as 500m or 20g, or 0 to empty the cache", *cacheSize)}
				}
				keep = n
			}
			s, err := openStore(g)
			if err != nil {
				return err
			}
			st, err := s.GC(ctx)
			if st != nil {
				// The chunk cache only after the store: a failed gc
				// leaves it alone.
				var freed int64
				if err == nil {
					freed, err = s.PruneCache(keep)
				}
				fmt.Fprintln(g.stdout, gcSummary(st, freed, keep))
				for _, p := range st.InUse {
					fmt.Fprintf(g.stdout, "Kept %s: in use by a running container\n", p)
				}
			}
			return err
		},
	}
}

// gcSummary is gc's line: what went, and the bytes freed; cacheFreed bytes
// of the chunk cache were removed to keep at most keep (0: all).
func gcSummary(st *store.GCStats, cacheFreed, keep int64) string {
	var parts []string
	add := func(n int, one, many string) {
		switch {
		case n == 1:
			parts = append(parts, "1 "+one)
		case n > 1:
			parts = append(parts, fmt.Sprintf("%d %s", n, many))
		}
	}
	add(st.Containers, "dead container", "dead containers")
	add(st.Blobs, "blob", "blobs")
	add(st.Indexes, "layer index", "layer indexes")
	add(st.LayerDirs, "extracted layer", "extracted layers")
	add(st.InflatedDirs, "inflated layer cache", "inflated layer caches")
	add(st.MergedTrees, "saved merged tree", "saved merged trees")
	add(st.Partials, "partial download", "partial downloads")
	add(st.TempFiles, "temporary file", "temporary files")
	if cacheFreed > 0 {
		if keep > 0 {
			parts = append(parts, "the chunk cache of lazy runs beyond "+store.HumanSize(keep))
		} else {
			parts = append(parts, "the chunk cache of lazy runs")
		}
	}
	if len(parts) == 0 {
		return "Nothing to remove"
	}
	return fmt.Sprintf("Removed %s: freed %s", strings.Join(parts, ", "), store.HumanSize(st.Bytes+cacheFreed))
}
