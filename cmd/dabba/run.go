package main

import (
	"context"
	"errors"

	"github.com/spf13/pflag"
)

// TEMPORARY placeholder of the skeleton; its owner replaces this file.
func newRunCmd(g *globals) *command {
	return &command{
		name:  "run",
		short: "run (not built yet)",
		flags: pflag.NewFlagSet("run", pflag.ContinueOnError),
		run: func(ctx context.Context, g *globals, args []string) error {
			return errors.New("not built yet")
		},
	}
}
