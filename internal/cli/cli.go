// Package cli holds what dabba's two commands, dabba and dabba-fs, share:
// the log setup behind --log-level and the default store directory.
package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// ParseLevel reads a --log-level value.
func ParseLevel(s string) (slog.Level, error) {
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

// SetupLogging installs a text handler that names the process on every line
// (proc=NAME[PID]), so the parent, the container's init and dabba-fs can be
// told apart in one log.
func SetupLogging(w io.Writer, level slog.Level, proc string) {
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

// DefaultRoot is the store: $XDG_DATA_HOME/dabba, else ~/.local/share/dabba;
// real root uses /var/lib/dabba, as podman uses /var/lib/containers.
func DefaultRoot() string {
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
