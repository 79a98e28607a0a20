package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/store"
)

// psCommandWidth is how many characters of the command `dabba ps` shows
// before an ellipsis, as docker's table does.
const psCommandWidth = 20

func newPsCmd(g *globals) *command {
	fs := pflag.NewFlagSet("ps", pflag.ContinueOnError)
	quiet := fs.BoolP("quiet", "q", false, "print only container IDs")
	format := fs.String("format", "", "output format: table (default) or json")
	noTrunc := fs.Bool("no-trunc", false, "print full container IDs and commands")
	// Containers are removed when they exit, so every container is a
	// running one: -a lists the same, and is accepted for podman's users.
	fs.BoolP("all", "a", false, "the same list: containers are removed when they exit")
	return &command{
		name:  "ps",
		usage: "[flags]",
		short: "list the running containers",
		flags: fs,
		run: func(ctx context.Context, g *globals, args []string) error {
			if len(args) != 0 {
				return &exitError{code: exitUsageStatus, err: errors.New("ps takes no arguments")}
			}
			if *format != "" && *format != "table" && *format != "json" {
				return &exitError{code: exitUsageStatus, err: fmt.Errorf("--format %q: want table or json", *format)}
			}
			s, err := openStore(g)
			if err != nil {
				return err
			}
			cs, listErr := s.Containers()
			if err := printContainers(g, cs, time.Now(), *quiet, *format == "json", *noTrunc); err != nil {
				return err
			}
			return listErr
		},
	}
}

// printContainers writes the ps listing: a table with podman's columns
// (and ROOTFS), ids only, or JSON.
func printContainers(g *globals, cs []store.ContainerInfo, now time.Time, quiet, asJSON, noTrunc bool) error {
	if asJSON {
		if cs == nil {
			cs = []store.ContainerInfo{}
		}
		b, err := json.MarshalIndent(cs, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "%s\n", b)
		return nil
	}
	id := func(s string) string {
		if noTrunc || len(s) <= 12 {
			return s
		}
		return s[:12]
	}
	if quiet {
		for _, c := range cs {
			fmt.Fprintln(g.stdout, id(c.ID))
		}
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tROOTFS\tNAMES")
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", id(c.ID), c.Image, psCommand(c.Command, noTrunc),
			humanAgo(now, c.Created), orNone(c.Rootfs), orNone(c.Name))
	}
	return tw.Flush()
}

// psCommand is the COMMAND column: the argv joined by spaces, quoted, cut
// to psCommandWidth characters with an ellipsis (docker's "sleep 30",
// "docker-entrypoint.s…").
func psCommand(argv []string, noTrunc bool) string {
	s := strings.Join(argv, " ")
	// One line in the table, whatever the arguments hold.
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); !noTrunc && len(r) > psCommandWidth {
		s = string(r[:psCommandWidth-1]) + "…"
	}
	return `"` + s + `"`
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
