package main

import (
	"context"
	"errors"

	"github.com/spf13/pflag"
)

// TEMPORARY placeholder of the skeleton; its owner replaces this file.
func newRmiCmd(g *globals) *command {
	return &command{
		name:  "rmi",
		short: "rmi (not built yet)",
		flags: pflag.NewFlagSet("rmi", pflag.ContinueOnError),
		run: func(ctx context.Context, g *globals, args []string) error {
			return errors.New("not built yet")
		},
	}
}
