package main

import (
	"io"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/internal/cli"
)

// globals holds the flags every command shares.
type globals struct {
	root     string // dabba's store
	logLevel string
	stdout   io.Writer
	stderr   io.Writer
	added    int
}

func (g *globals) addFlags(fs *pflag.FlagSet) {
	if g.added == 0 {
		g.root, g.logLevel = defaultRoot(), "error"
	}
	g.added++
	fs.StringVar(&g.root, "root", g.root, "dabba's store directory, where IMAGE is looked up")
	fs.StringVar(&g.logLevel, "log-level", g.logLevel, "log level: error, warn, info or debug")
}

// setup checks the global flags and installs the logger.
func (g *globals) setup() error {
	level, err := cli.ParseLevel(g.logLevel)
	if err != nil {
		return err
	}
	cli.SetupLogging(g.stderr, level, "dabba-fs")
	return nil
}

// defaultRoot is dabba's default store.
func defaultRoot() string { return cli.DefaultRoot() }
