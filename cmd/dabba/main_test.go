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
