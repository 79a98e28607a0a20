// Command dabba is a rootless container runtime that starts sandboxes from
// images without extracting them. See the README for the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// command is one subcommand. Each lives in its own file with a constructor
// that owns its FlagSet.
type command struct {
	name   string
	usage  string // arguments after the name, e.g. "[flags] IMAGE"
	short  string // one line for the help listing
	hidden bool
	// interspersed is false for commands whose trailing arguments belong to
	// another program (run IMAGE CMD...).
	noInterspersed bool
	flags          *pflag.FlagSet
	run            func(ctx context.Context, g *globals, args []string) error
}

// commands lists every subcommand, in help order. Hidden ones stay out of help.
func commands(g *globals) []*command {
	cmds := []*command{
		newPullCmd(g),
		newRunCmd(g),
		newPsCmd(g),
		newImagesCmd(g),
		newRmiCmd(g),
		newInspectCmd(g),
		newGCCmd(g),
		newIndexCmd(g),
		newVersionCmd(g),
	}
	return append(cmds, hiddenCommands(g)...)
}

// exitError carries an exit status to main without printing anything more:
// the container's own status, or a status whose message was already printed.
type exitError struct {
	code int
	err  error // printed when non-nil
}

func (e *exitError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

func (e *exitError) Unwrap() error { return e.err }

// Exit codes follow podman: 125 for dabba's own failure, 126 for a command that
// cannot be run, 127 for a command not found.
const (
	exitDabba       = 125
	exitCannotRun   = 126
	exitNotFound    = 127
	exitUsageStatus = 125
)

func main() {
	// The sandbox child re-executes this binary; it must take over before
	// anything else runs (flags, logging, goroutines).
	if len(os.Args) > 1 && isChildCommand(os.Args[1]) {
		runtime.LockOSThread()
		os.Exit(runChild(os.Args[1], os.Args[2:]))
	}
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	g := newGlobals(stdout, stderr)
	root := pflag.NewFlagSet("dabba", pflag.ContinueOnError)
	root.SetInterspersed(false)
	root.SetOutput(io.Discard)
	g.addFlags(root)
	help := root.BoolP("help", "h", false, "show help")
	if err := root.Parse(args); err != nil {
		fmt.Fprintf(stderr, "dabba: %v\n", err)
		fmt.Fprintln(stderr, "Run 'dabba --help' for usage.")
		return exitUsageStatus
	}
	if err := g.setup(); err != nil {
		fmt.Fprintf(stderr, "dabba: %v\n", err)
		return exitUsageStatus
	}
	cmds := commands(g)
	rest := root.Args()
	if *help || len(rest) == 0 {
		printUsage(stdout, root, cmds)
		if len(rest) == 0 && !*help {
			return exitUsageStatus
		}
		return 0
	}
	name := rest[0]
	if name == "help" {
		if len(rest) > 1 {
			if c := findCommand(cmds, rest[1]); c != nil {
				printCommandUsage(stdout, c)
				return 0
			}
		}
		printUsage(stdout, root, cmds)
		return 0
	}
	c := findCommand(cmds, name)
	if c == nil {
		if args, ok := seedForm(rest); ok {
			// The seed's form, `dabba IMAGE TAG`: an interactive run.
			c, rest = findCommand(cmds, "run"), args
		}
	}
	if c == nil {
		fmt.Fprintf(stderr, "dabba: unknown command %q\nRun 'dabba --help' for usage.\n", name)
		return exitUsageStatus
	}
	c.flags.SetOutput(io.Discard)
	c.flags.SetInterspersed(!c.noInterspersed)
	chelp := c.flags.BoolP("help", "h", false, "show help for "+c.name)
	if err := c.flags.Parse(rest[1:]); err != nil {
		fmt.Fprintf(stderr, "dabba %s: %v\nRun 'dabba %s --help' for usage.\n", c.name, err, c.name)
		return exitUsageStatus
	}
	if *chelp {
		printCommandUsage(stdout, c)
		return 0
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.Debug("command start", "stage", c.name, "args", c.flags.Args())
	err := c.run(ctx, g, c.flags.Args())
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "dabba %s: %v%s\n", c.name, ee.err, errorHint(ee.err, g))
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "dabba %s: %v%s\n", c.name, err, errorHint(err, g))
	return exitDabba
}

// errorHint is what to do about err where its message cannot say it: a
// full disk, wherever it happened.
func errorHint(err error, g *globals) string {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Sprintf(" (free space on the filesystem of %s: `dabba gc` removes unused blobs, partial downloads and the chunk cache of lazy runs)", g.root)
	}
	return ""
}

// seedForm turns `dabba IMAGE TAG`, the first form dabba had, into the
// arguments of `dabba run -i [-t] IMAGE:TAG` (-t when stdin is a terminal).
func seedForm(rest []string) ([]string, bool) {
	if len(rest) != 2 || strings.HasPrefix(rest[0], "-") || strings.HasPrefix(rest[1], "-") ||
		strings.ContainsAny(rest[0], "@") || strings.ContainsAny(rest[1], "/:@") {
		return nil, false
	}
	args := []string{"run", "-i"}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		args = append(args, "-t")
	}
	return append(args, rest[0]+":"+rest[1]), true
}

func findCommand(cmds []*command, name string) *command {
	for _, c := range cmds {
		if c.name == name {
			return c
		}
	}
	return nil
}

func printUsage(w io.Writer, root *pflag.FlagSet, cmds []*command) {
	fmt.Fprintln(w, "dabba: rootless containers that start before the image is extracted")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: dabba [global flags] COMMAND [flags] [args]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	visible := make([]*command, 0, len(cmds))
	for _, c := range cmds {
		if !c.hidden {
			visible = append(visible, c)
		}
	}
	for _, c := range visible {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.short)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Global flags:")
	fmt.Fprint(w, flagUsages(root))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'dabba COMMAND --help' for a command's flags.")
}

// flagUsages is pflag's listing without the "[=true|false]" it writes
// after every boolean flag, as podman's help shows them.
func flagUsages(fs *pflag.FlagSet) string {
	return strings.ReplaceAll(fs.FlagUsages(), "[=true|false]", strings.Repeat(" ", len("[=true|false]")))
}

func printCommandUsage(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: dabba %s %s\n\n%s\n", c.name, c.usage, c.short)
	if c.flags.HasAvailableFlags() {
		fmt.Fprintln(w, "\nFlags:")
		fmt.Fprint(w, flagUsages(c.flags))
	}
}
