package main

import (
	"context"
	"errors"

	"github.com/spf13/pflag"
)

// TEMPORARY placeholder of the skeleton; its owner replaces this file.
func newGCCmd(g *globals) *command {
	return &command{
		name:  "gc",
		short: "gc (not built yet)",
		flags: pflag.NewFlagSet("gc", pflag.ContinueOnError),
		run: func(ctx context.Context, g *globals, args []string) error {
			return errors.New("not built yet")
		},
	}
}
