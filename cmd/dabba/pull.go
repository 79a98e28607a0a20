package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/store"
)

func newPullCmd(g *globals) *command {
	fs := pflag.NewFlagSet("pull", pflag.ContinueOnError)
	var rf registryFlags
	rf.add(fs)
	quiet := fs.BoolP("quiet", "q", false, "print only the image ID")
	jobs := fs.Int("jobs", store.DefaultJobs, "layers to fetch at once")
	return &command{
		name:  "pull",
		usage: "[flags] IMAGE",
		short: "fetch an image from a registry into the store",
		flags: fs,
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) != 1 {
				return &exitError{code: exitUsageStatus, err: errors.New("want exactly one IMAGE, e.g. dabba pull alpine")}
			}
			if *jobs < 1 {
				return &exitError{code: exitUsageStatus, err: fmt.Errorf("--jobs %d: want 1 or more", *jobs)}
			}
			platform, insecure, err := rf.parse()
			if err != nil {
				return err
			}
			opts := store.PullOptions{Platform: platform, Insecure: insecure, Quiet: *quiet, Jobs: *jobs}
			if !*quiet {
				opts.Progress = g.stderr
			}
			s, err := openStore(g)
			if err != nil {
				return err
			}
			if !*quiet {
				name, err := store.Normalize(args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stderr, "Pulling %s\n", name)
			}
			img, err := s.Pull(ctx, args[0], opts)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, img.ID)
			return nil
		},
	}
}
