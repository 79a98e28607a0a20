package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/store"
)

func newGCCmd(g *globals) *command {
	fs := pflag.NewFlagSet("gc", pflag.ContinueOnError)
	return &command{
		name:  "gc",
		usage: "",
		short: "remove dead containers, and blobs, layers and partial downloads no image uses",
		flags: fs,
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) != 0 {
				return &exitError{code: exitUsageStatus, err: errors.New("gc takes no arguments")}
			}
			s, err := openStore(g)
			if err != nil {
				return err
			}
			st, err := s.GC(ctx)
			if st != nil {
				fmt.Fprintln(g.stdout, gcSummary(st))
				for _, p := range st.InUse {
					fmt.Fprintf(g.stdout, "Kept %s: in use by a running container\n", p)
				}
			}
			return err
		},
	}
}

func gcSummary(st *store.GCStats) string {
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
	add(st.Partials, "partial download", "partial downloads")
	add(st.TempFiles, "temporary file", "temporary files")
	if len(parts) == 0 {
		return "Nothing to remove"
	}
	return fmt.Sprintf("Removed %s: freed %s", strings.Join(parts, ", "), store.HumanSize(st.Bytes))
}
