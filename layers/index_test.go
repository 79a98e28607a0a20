package layers

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/dabba/dabba/layers/layertest"
)

func TestIndexRoundTrip(t *testing.T) {
	b := layertest.Tar(
		layertest.Dir("usr"), layertest.Dir("usr/lib"),
		layertest.File("usr/lib/libc.so", strings.Repeat("x", 3000), layertest.Xattr("user.b", "2"), layertest.Xattr("user.a", "1")),
		layertest.File("usr/lib/libm.so", "m", layertest.Mode(0o6755), layertest.Owner(1<<31, 7)),
		layertest.Symlink("usr/lib/l", "libc.so"), layertest.Hardlink("usr/h", "usr/lib/libm.so"),
		layertest.Char("dev/x", 4000, 1<<20), layertest.Whiteout("etc/gone"), layertest.Opaque("var"),
		layertest.File("z", "", layertest.Mtime(layertest.DefaultMtime.AddDate(-80, 0, 0))),
	)
	ix, err := IndexLayer(bytes.NewReader(b), "sha256:roundtrip")
	if err != nil {
		t.Fatal(err)
	}
	data, err := ix.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Index
	if err := got.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, ix) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, *ix)
	}
	// Deterministic output (xattrs sorted).
	if again, _ := got.MarshalBinary(); !bytes.Equal(again, data) {
		t.Error("marshalling twice differs")
	}
	t.Logf("%d entries, tar %d bytes, index %d bytes", len(ix.Entries), len(b), len(data))

	var empty Index
	ed, _ := (&Index{}).MarshalBinary()
	if err := empty.UnmarshalBinary(ed); err != nil || len(empty.Entries) != 0 {
		t.Errorf("empty index: %v %+v", err, empty)
	}
}

func TestIndexUnmarshalCorrupt(t *testing.T) {
	ix, err := IndexLayer(bytes.NewReader(layertest.Tar(layertest.File("a/b", "x"), layertest.Dir("c"))), "sha256:c")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := ix.MarshalBinary()
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(data)) }
	tests := []struct {
		name string
		data []byte
		msg  string
	}{
		{"empty", nil, "not a layer index"},
		{"other magic", []byte("PK\x03\x04 something else"), "not a layer index"},
		{"version 2", mod(func(b []byte) []byte { b[7] = 2; return b }), "version 2"},
		{"flipped byte", mod(func(b []byte) []byte { b[12] ^= 1; return b }), "checksum"},
		{"truncated", data[:len(data)-3], "checksum"},
		{"appended", append(bytes.Clone(data), 0), "checksum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Index
			err := got.UnmarshalBinary(tt.data)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want ErrCorrupt with %q", err, tt.msg)
			}
		})
	}
}
