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
	var level slog.Level
	switch strings.ToLower(g.logLevel) {
	case "error":
		level = slog.LevelError
	case "warn", "warning":
		level = slog.LevelWarn
	case "info":
		level = slog.LevelInfo
	case "debug":
		level = slog.LevelDebug
	default:
		return fmt.Errorf("--log-level %q: want error, warn, info or debug", g.logLevel)
	}
	h := slog.NewTextHandler(g.stderr, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.String(slog.TimeKey, a.Value.Time().Format("15:04:05.000"))
			}
			return a
		},
	})
	slog.SetDefault(slog.New(h).With("proc", fmt.Sprintf("dabba-fs[%d]", os.Getpid())))
	return nil
}

// defaultRoot is dabba's default store: /var/lib/dabba for root, else
// $XDG_DATA_HOME/dabba or ~/.local/share/dabba.
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
