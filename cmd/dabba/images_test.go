package main

import (
	"runtime"
	"testing"
	"time"
)

func hostArch() string { return runtime.GOARCH }

func TestHumanAgo(t *testing.T) {
	now := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		0:                     "Less than a second ago",
		30 * time.Second:      "30 seconds ago",
		90 * time.Second:      "About a minute ago",
		10 * time.Minute:      "10 minutes ago",
		70 * time.Minute:      "About an hour ago",
		5 * time.Hour:         "5 hours ago",
		3 * 24 * time.Hour:    "3 days ago",
		20 * 24 * time.Hour:   "2 weeks ago",
		100 * 24 * time.Hour:  "3 months ago",
		1000 * 24 * time.Hour: "2 years ago",
	} {
		if got := humanAgo(now, now.Add(-d)); got != want {
			t.Errorf("humanAgo(%v) = %q, want %q", d, got, want)
		}
	}
	if got := humanAgo(now, time.Time{}); got != "unknown" {
		t.Errorf("zero time: %q", got)
	}
}
