package main

// TEMPORARY placeholder of the skeleton; the sandbox owner replaces this file.

// isChildCommand reports whether argv[1] names a process dabba re-executes
// itself as (the container's init); those run before flags and logging.
func isChildCommand(name string) bool { return false }

// runChild runs a re-executed child and returns its exit status.
func runChild(name string, args []string) int { return 125 }

// hiddenCommands are subcommands kept out of help.
func hiddenCommands(g *globals) []*command { return nil }
