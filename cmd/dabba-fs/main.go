// Command dabba-fs serves an image's merged layers over FUSE, on its own,
// without the runtime: for debugging, and for people who want the
// filesystem without containers.
//
//	dabba-fs mount alpine /mnt/alpine          # from dabba's store; Ctrl-C unmounts
//	dabba-fs mount --layers a.tar,b.tar.gz /mnt
//	dabba-fs index alpine                      # the merged tree, ls -lR style
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

// command is one subcommand; each lives in its own file with a constructor
// owning its FlagSet.
type command struct {
	name  string
	usage string
	short string
	flags *pflag.FlagSet
	run   func(ctx context.Context, g *globals, args []string) error
}

func commands(g *globals) []*command {
	return []*command{newMountCmd(g), newIndexCmd(g)}
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := pflag.NewFlagSet("dabba-fs", pflag.ContinueOnError)
	root.SetInterspersed(false)
	root.SetOutput(io.Discard)
	g.addFlags(root)
	help := root.BoolP("help", "h", false, "show help")
	if err := root.Parse(args); err != nil {
		fmt.Fprintf(stderr, "dabba-fs: %v\nRun 'dabba-fs --help' for usage.\n", err)
		return 2
	}
	cmds := commands(g)
	rest := root.Args()
	if *help || len(rest) == 0 || rest[0] == "help" {
		printUsage(stdout, root, cmds)
		if !*help && len(rest) == 0 {
			return 2
		}
		return 0
	}
	var c *command
	for _, x := range cmds {
		if x.name == rest[0] {
			c = x
		}
	}
	if c == nil {
		fmt.Fprintf(stderr, "dabba-fs: unknown command %q\nRun 'dabba-fs --help' for usage.\n", rest[0])
		return 2
	}
	c.flags.SetOutput(io.Discard)
	g.addFlags(c.flags) // global flags are accepted after the command too
	chelp := c.flags.BoolP("help", "h", false, "show help for "+c.name)
	if err := c.flags.Parse(rest[1:]); err != nil {
		fmt.Fprintf(stderr, "dabba-fs %s: %v\nRun 'dabba-fs %s --help' for usage.\n", c.name, err, c.name)
		return 2
	}
	if *chelp {
		fmt.Fprintf(stdout, "Usage: dabba-fs %s %s\n\n%s\n\nFlags:\n%s", c.name, c.usage, c.short, c.flags.FlagUsages())
		return 0
	}
	if err := g.setup(); err != nil {
		fmt.Fprintf(stderr, "dabba-fs: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := c.run(ctx, g, c.flags.Args()); err != nil {
		fmt.Fprintf(stderr, "dabba-fs %s: %v\n", c.name, err)
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "Run 'dabba-fs %s --help' for usage.\n", c.name)
			return 2
		}
		return 1
	}
	return 0
}

func printUsage(w io.Writer, root *pflag.FlagSet, cmds []*command) {
	fmt.Fprintln(w, "dabba-fs: serve an image's merged layers over FUSE, without extracting them")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: dabba-fs [global flags] COMMAND [flags] [args]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.short)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Global flags:")
	fmt.Fprint(w, root.FlagUsages())
}
