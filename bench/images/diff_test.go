package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

type tree map[string]string // path → content; "/" suffix: directory; "->x": symlink to x

func makeTree(t *testing.T, dir string, tr tree) {
	t.Helper()
	mt := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	var paths []string
	for p := range tr {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		c := tr[p]
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(p, "/"):
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(c, "->"):
			if err := os.Symlink(c[2:], full); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(c, "=>"):
			if err := os.Link(filepath.Join(dir, c[2:]), full); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(full, mt, mt); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// entries lists a layer's entries as "name" for directories and whiteouts,
// "name=content", "name->target", "name=>first".
func entries(t *testing.T, layer []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			b, _ := io.ReadAll(tr)
			if strings.HasPrefix(filepath.Base(h.Name), whiteoutPrefix) {
				out = append(out, h.Name)
			} else {
				out = append(out, h.Name+"="+string(b))
			}
		case tar.TypeSymlink:
			out = append(out, h.Name+"->"+h.Linkname)
		case tar.TypeLink:
			out = append(out, h.Name+"=>"+h.Linkname)
		default:
			out = append(out, h.Name)
		}
	}
}

func TestTreeDiff(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	makeTree(t, lower, tree{
		"etc/os-release":    "old",
		"etc/keep":          "same",
		"usr/share/doc/a":   "doc a",
		"usr/share/doc/b":   "doc b",
		"var/lists/x":       "x",
		"var/lists/y":       "y",
		"bin/sh":            "->dash",
		"bin/dash":          "dash",
		"opt/became-file/":  "",
		"dev/":              "",
		"deep/a/b/c/same":   "c",
		"deep/a/b/c/change": "1",
	})
	makeTree(t, upper, tree{
		"etc/os-release":    "new",
		"etc/keep":          "same",
		"usr/share/doc/":    "",
		"var/lists/z":       "z",
		"bin/sh":            "->bash",
		"bin/dash":          "dash",
		"bin/bash":          "bash",
		"bin/rbash":         "=>bin/bash",
		"opt/became-file":   "now a file",
		"dev/null":          "skipped",
		"deep/a/b/c/same":   "c",
		"deep/a/b/c/change": "2",
	})
	var buf bytes.Buffer
	n, err := TreeDiff(&buf, lower, upper, TreeDiffOptions{Skip: []string{"dev"}})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Errorf("TreeDiff returned %d bytes, wrote %d", n, buf.Len())
	}
	got := entries(t, buf.Bytes())
	want := []string{
		"bin/", "bin/bash=bash", "bin/rbash=>bin/bash", "bin/sh->bash",
		"deep/", "deep/a/", "deep/a/b/", "deep/a/b/c/", "deep/a/b/c/change=2",
		"etc/", "etc/os-release=new",
		"opt/", "opt/became-file=now a file",
		"usr/", "usr/share/", "usr/share/doc/", "usr/share/doc/.wh.a", "usr/share/doc/.wh.b",
		"var/", "var/lists/", "var/lists/.wh..wh..opq", "var/lists/z=z",
	}
	if !slices.Equal(got, want) {
		t.Errorf("diff layer:\n got %q\nwant %q", got, want)
	}

	// The base layer: everything, /dev kept empty.
	buf.Reset()
	if _, err := TreeDiff(&buf, "", upper, TreeDiffOptions{Skip: []string{"dev"}}); err != nil {
		t.Fatal(err)
	}
	got = entries(t, buf.Bytes())
	for _, w := range []string{"dev/", "etc/keep=same", "bin/rbash=>bin/bash", "usr/share/doc/"} {
		if !slices.Contains(got, w) {
			t.Errorf("base layer lacks %q: %q", w, got)
		}
	}
	if slices.Contains(got, "dev/null=skipped") {
		t.Errorf("base layer has the skipped dev/null: %q", got)
	}

	// No change: an empty layer.
	buf.Reset()
	if _, err := TreeDiff(&buf, upper, upper, TreeDiffOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := entries(t, buf.Bytes()); len(got) != 0 {
		t.Errorf("diff of a tree with itself: %q", got)
	}
}

func TestTreeDiffMissingTree(t *testing.T) {
	_, err := TreeDiff(io.Discard, "", filepath.Join(t.TempDir(), "absent"), TreeDiffOptions{})
	if err == nil || !strings.Contains(err.Error(), "absent") {
		t.Fatalf("TreeDiff of a missing tree: %v, want an error naming it", err)
	}
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
