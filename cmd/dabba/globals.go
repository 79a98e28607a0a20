package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/internal/cli"
)

// globals holds the flags every command shares and what main derives from them.
type globals struct {
	root     string // the store directory
	logLevel string
	stdout   io.Writer
	stderr   io.Writer
}

func newGlobals(stdout, stderr io.Writer) *globals {
	return &globals{stdout: stdout, stderr: stderr}
}

func (g *globals) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&g.root, "root", cli.DefaultRoot(), "where images and layers are stored")
	fs.StringVar(&g.logLevel, "log-level", "error", "log level: error, warn, info or debug")
}

// setup validates the global flags and installs the logger.
func (g *globals) setup() error {
	level, err := cli.ParseLevel(g.logLevel)
	if err != nil {
		return err
	}
	cli.SetupLogging(g.stderr, level, "dabba")
	if g.root == "" {
		return fmt.Errorf("no store directory: set --root, or HOME or XDG_DATA_HOME")
	}
	abs, err := filepath.Abs(g.root)
	if err != nil {
		return fmt.Errorf("store directory %q: %w", g.root, err)
	}
	g.root = abs
	return nil
}
