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
	platform := fs.String("platform", "", "choose os/arch[/variant] from a multi-arch image (default: this host's)")
	tlsVerify := fs.Bool("tls-verify", true, "require HTTPS with a verified certificate (loopback registries may use HTTP anyway)")
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
			opts := store.PullOptions{Insecure: !*tlsVerify, Quiet: *quiet, Jobs: *jobs}
			if *jobs < 1 {
				return &exitError{code: exitUsageStatus, err: fmt.Errorf("--jobs %d: want 1 or more", *jobs)}
			}
			if *platform != "" {
				p, err := store.ParsePlatform(*platform)
				if err != nil {
					return &exitError{code: exitUsageStatus, err: err}
				}
				opts.Platform = p
			}
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
