package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/store"
)

// newIndexCmd is `dabba index push IMAGE`: build the lazy index of an
// image's gzip layers and push it beside the image as an OCI artifact.
func newIndexCmd(g *globals) *command {
	fs := pflag.NewFlagSet("index", pflag.ContinueOnError)
	var rf registryFlags
	rf.add(fs)
	quiet := fs.BoolP("quiet", "q", false, "print only the index artifact's digest")
	noPrefetch := fs.Bool("no-prefetch", false, "leave out the prefetch list (what earlier `dabba run --lazy` runs of the image here read at start)")
	return &command{
		name:  "index",
		usage: "push [flags] IMAGE",
		short: "push a lazy index of an image's gzip layers, so `dabba run --lazy` fetches only what it reads",
		flags: fs,
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) != 2 || args[0] != "push" {
				return &exitError{code: exitUsageStatus, err: errors.New("want `dabba index push IMAGE`, e.g. dabba index push registry.example.com/app:1")}
			}
			platform, insecure, err := rf.parse()
			if err != nil {
				return err
			}
			opts := store.IndexPushOptions{Platform: platform, Insecure: insecure, NoPrefetch: *noPrefetch}
			if !*quiet {
				opts.Progress = g.stderr
			}
			s, err := openStore(g)
			if err != nil {
				return err
			}
			res, err := s.PushIndex(ctx, args[1], opts)
			if err != nil {
				return err
			}
			if *quiet {
				fmt.Fprintln(g.stdout, res.Artifact)
				return nil
			}
			for _, sk := range res.Skipped {
				fmt.Fprintf(g.stderr, "Layer %s not indexed: %s\n", sk.Digest, sk.Reason)
			}
			fmt.Fprintf(g.stderr, "Indexed %d of %d layers of %s\n", len(res.Indexed), len(res.Image.Layers), res.Image.Name)
			if res.PrefetchRanges > 0 {
				fmt.Fprintf(g.stderr, "With a prefetch list of %d ranges (%s) that earlier lazy runs here read at start: a first lazy run elsewhere fetches them at once\n",
					res.PrefetchRanges, store.HumanSize(res.PrefetchBytes))
			} else if !*noPrefetch {
				fmt.Fprintf(g.stderr, "No prefetch list: run the image's usual command once with `dabba run --lazy` from this store, then push again, so first lazy runs elsewhere fetch what it reads at once\n")
			}
			fmt.Fprintln(g.stdout, res.Artifact)
			return nil
		},
	}
}
