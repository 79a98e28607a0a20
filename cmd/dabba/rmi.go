package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"
)

func newRmiCmd(g *globals) *command {
	fs := pflag.NewFlagSet("rmi", pflag.ContinueOnError)
	force := fs.BoolP("force", "f", false, "remove every name of an image given by ID")
	return &command{
		name:  "rmi",
		usage: "[flags] IMAGE...",
		short: "remove images from the store",
		flags: fs,
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) == 0 {
				return &exitError{code: exitUsageStatus, err: errors.New("want at least one IMAGE (name, name:tag, name@digest or ID)")}
			}
			s, err := openStore(g)
			if err != nil {
				return err
			}
			var errs []error
			for _, a := range args {
				res, err := s.Remove(ctx, a, *force)
				if res != nil {
					for _, n := range res.Untagged {
						fmt.Fprintf(g.stdout, "Untagged: %s\n", n)
					}
					if res.Deleted != "" {
						fmt.Fprintf(g.stdout, "Deleted: %s\n", res.Deleted)
					}
				}
				if err != nil {
					errs = append(errs, err)
				}
			}
			if len(errs) == 1 {
				return errs[0]
			}
			return errors.Join(errs...)
		},
	}
}
