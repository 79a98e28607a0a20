package main

import (
	"context"
	"errors"

	"github.com/spf13/pflag"
)

// TEMPORARY placeholder of the skeleton; its owner replaces this file.
func newImagesCmd(g *globals) *command {
	return &command{
		name:  "images",
		short: "images (not built yet)",
		flags: pflag.NewFlagSet("images", pflag.ContinueOnError),
		run: func(ctx context.Context, g *globals, args []string) error {
			return errors.New("not built yet")
		},
	}
}
