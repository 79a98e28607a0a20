package main

import (
	"strings"
	"testing"
)

// TestRunLimitsUndelegated: where the caller's cgroup is not delegated (the
// test user's cgroup here belongs to root), limits are ignored with one
// warning that says how to delegate, and the command runs, as podman does
// on cgroup v1.
func TestRunLimitsUndelegated(t *testing.T) {
	e := newRunEnv(t)
	o := e.run(t, "", nil, "--memory", "64m", "--pids-limit", "100", e.bbox, "echo", "ran")
	if o.Code != 0 || strings.TrimSpace(o.Stdout) != "ran" {
		t.Fatalf("status %d, stdout %q, stderr %q", o.Code, o.Stdout, o.Stderr)
	}
	var warnings []string
	for _, l := range strings.Split(o.Stderr, "\n") {
		if strings.Contains(l, "warning: resource limits ignored") {
			warnings = append(warnings, l)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "chown") {
		t.Fatalf("want one warning saying how to delegate, stderr %q", o.Stderr)
	}
	// A malformed limit is the user's mistake, never ignored.
	o = e.run(t, "", nil, "--memory", "lots", e.bbox, "true")
	if o.Code != 125 || !strings.Contains(o.Stderr, "--memory") {
		t.Fatalf("--memory lots: status %d, stderr %q", o.Code, o.Stderr)
	}
}
