package main

import (
	"github.com/dabba/dabba/sandbox"
)

// Hidden child commands: processes dabba re-executes itself as. They run
// before flags and logging (main dispatches them first, thread locked).
const (
	// childInit is the container's init (sandbox.ChildMain).
	childInit = sandbox.ChildArg
	// childExtract extracts a layer inside a user namespace (rootfs.go).
	childExtract = "init-extract"
)

// isChildCommand reports whether argv[1] names a process dabba re-executes
// itself as (the container's init); those run before flags and logging.
func isChildCommand(name string) bool {
	return name == childInit || name == childExtract
}

// runChild runs a re-executed child and returns its exit status.
func runChild(name string, args []string) int {
	switch name {
	case childInit:
		return sandbox.ChildMain()
	case childExtract:
		return runExtractChild(args)
	}
	return exitDabba
}

// hiddenCommands are subcommands kept out of help.
func hiddenCommands(g *globals) []*command { return nil }
