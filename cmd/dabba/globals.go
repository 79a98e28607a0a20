package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
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
	fs.StringVar(&g.root, "root", defaultRoot(), "where images and layers are stored")
	fs.StringVar(&g.logLevel, "log-level", "error", "log level: error, warn, info or debug")
}

// setup validates the global flags and installs the logger.
func (g *globals) setup() error {
	level, err := parseLevel(g.logLevel)
	if err != nil {
		return err
	}
	setupLogging(g.stderr, level, "dabba")
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

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "error":
		return slog.LevelError, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	}
	return 0, fmt.Errorf("--log-level %q: want error, warn, info or debug", s)
}

// setupLogging installs a text handler that names the process on every line,
// so the parent, the container's init and dabba-fs can be told apart.
func setupLogging(w io.Writer, level slog.Level, proc string) {
	h := slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.String(slog.TimeKey, a.Value.Time().Format("15:04:05.000"))
			}
			return a
		},
	})
	slog.SetDefault(slog.New(h).With("proc", fmt.Sprintf("%s[%d]", proc, os.Getpid())))
}

// defaultRoot is $XDG_DATA_HOME/dabba, else ~/.local/share/dabba; real root
// uses /var/lib/dabba, as podman uses /var/lib/containers.
func defaultRoot() string {
	if os.Geteuid() == 0 {
		return "/var/lib/dabba"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "dabba")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "dabba")
	}
	return ""
}
