package main

import (
	"os"
	"testing"

	"github.com/dabba/dabba/internal/testenv"
)

// TestMain removes the binaries the integration tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupBinaries()
	os.Exit(code)
}

func TestSeedForm(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string // the image argument, "" when not the seed form
	}{
		{[]string{"alpine", "3.20"}, "alpine:3.20"},
		{[]string{"127.0.0.1:5000/demo/busybox", "latest"}, "127.0.0.1:5000/demo/busybox:latest"},
		{[]string{"alpine"}, ""},
		{[]string{"alpine", "sh", "-c"}, ""},
		{[]string{"-x", "3.20"}, ""},
		{[]string{"alpine", "/bin/sh"}, ""},
		{[]string{"alpine@sha256:ab", "x"}, ""},
	} {
		args, ok := seedForm(tc.in)
		if ok != (tc.want != "") {
			t.Errorf("seedForm(%q) = %q, %v", tc.in, args, ok)
			continue
		}
		if ok && (args[0] != "run" || args[len(args)-1] != tc.want) {
			t.Errorf("seedForm(%q) = %q, want run ... %s", tc.in, args, tc.want)
		}
	}
}
