package layers

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dabba/dabba/layers/layertest"
)

// FuzzExtract extracts fuzzed layers full of symlinks pointing out of the
// extraction directory, and checks that nothing outside it changed.
// Errors are allowed (a hard link to nothing, mknod refused when not
// root); escapes are not.
func FuzzExtract(f *testing.F) {
	f.Add([]byte{3, 0, 9, 1, 2, 0, 3, 1, 10, 1, 4, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		root, outside := filepath.Join(base, "root"), filepath.Join(base, "outside")
		for _, d := range []string{root, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(outside, "a"), []byte("outside"), 0o644); err != nil {
			t.Fatal(err)
		}
		// Symlink targets reach outside in every way a layer can say it.
		targets := append([]string{outside, outside + "/a", "../outside", "../../outside/a", "/", ".."}, fuzzPaths...)
		var entries []layertest.Entry
		for len(data) >= 3 {
			k, p := data[0], fuzzPaths[int(data[1])%len(fuzzPaths)]
			q := targets[int(data[2])%len(targets)]
			data = data[3:]
			if k%8 != 1 {
				p = strings.TrimSuffix(p, "/")
			}
			switch k % 8 {
			case 0:
				entries = append(entries, layertest.File(p, "in"))
			case 1:
				entries = append(entries, layertest.Dir(p, layertest.Mode(0o700)))
			case 2, 3:
				entries = append(entries, layertest.Symlink(p, q))
			case 4:
				entries = append(entries, layertest.Hardlink(p, fuzzPaths[int(q[0])%len(fuzzPaths)]))
			case 5:
				entries = append(entries, layertest.Whiteout(p))
			case 6:
				entries = append(entries, layertest.Opaque(p))
			case 7:
				entries = append(entries, layertest.Fifo(p))
			}
		}
		Extract(root, bytes.NewReader(layertest.Tar(entries...)), ExtractOptions{
			IgnoreChownErrors: true, SkipDevices: true,
		})
		ents, err := os.ReadDir(outside)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != "a" {
			t.Fatalf("outside directory changed: %v", ents)
		}
		if b, err := os.ReadFile(filepath.Join(outside, "a")); err != nil || string(b) != "outside" {
			t.Fatalf("outside file changed: %q %v", b, err)
		}
		if fi, err := os.Stat(outside); err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("outside directory mode changed: %v", fi.Mode())
		}
		if ents, _ := os.ReadDir(base); len(ents) != 2 {
			t.Fatalf("extraction wrote beside its directory: %v", ents)
		}
	})
}
