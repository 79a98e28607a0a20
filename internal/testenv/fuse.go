package testenv

import (
	"os"
	"testing"
)

// RequireFUSE skips (or fails under CI) when /dev/fuse cannot be opened for
// reading and writing, or when the test can mount neither itself (root)
// nor through fusermount3.
func RequireFUSE(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		Missing(t, "/dev/fuse is not usable: "+err.Error(), "load the fuse module and make /dev/fuse mode 0666: run `make deps` as root")
	}
	f.Close()
	if os.Geteuid() != 0 {
		RequireCommand(t, "fusermount3", "fuse3")
	}
}
