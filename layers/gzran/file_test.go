package gzran

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ReadFileDetached reads what MarshalBinary wrote: the same checkpoints,
// reads through it give the same bytes, and it keeps no windows.
func TestReadFileDetached(t *testing.T) {
	raw := textish(11, 1<<20)
	gz := gzStd(t, raw, 6)
	_, ix := inflateAll(t, gz, 128<<10)
	enc, err := ix.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ix")
	if err := os.WriteFile(path, enc, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := ReadFileDetached(path)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Detached() || d.Windows() != nil {
		t.Fatal("windows kept")
	}
	a, b := ix.Checkpoints(), d.Checkpoints()
	if len(a) < 6 || len(a) != len(b) {
		t.Fatalf("%d checkpoints, want %d", len(b), len(a))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("checkpoint %d: %+v, want %+v", i, b[i], a[i])
		}
	}
	// The marshalled detached form is the one Detach gives.
	dd, _ := ix.Detach().MarshalBinary()
	if got, _ := d.MarshalBinary(); !bytes.Equal(got, dd) {
		t.Fatal("detached encoding differs from Detach's")
	}
	r, err := d.NewReaderAt(bytes.NewReader(gz), int64(len(gz)))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(raw))
	for off := int64(len(raw)) - 1000; off > 0; off -= 150 << 10 { // backwards: every window
		if n, err := r.ReadAt(got[off:off+1000], off); n != 1000 || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt %d: %d, %v", off, n, err)
		}
		if !bytes.Equal(got[off:off+1000], raw[off:off+1000]) {
			t.Fatalf("ReadAt %d: wrong bytes", off)
		}
	}

	// A detached file reads as itself.
	dpath := filepath.Join(t.TempDir(), "dix")
	os.WriteFile(dpath, dd, 0o600)
	if d2, err := ReadFileDetached(dpath); err != nil || len(d2.Checkpoints()) != len(a) {
		t.Fatalf("detached file: %v", err)
	}

	// A window changed in the file after it was read is refused, never
	// used: the read fails with ErrIndex.
	bad := bytes.Clone(enc)
	i := bytes.Index(enc, ix.Windows()[3])
	if i < 0 {
		t.Fatal("window 3 not found in the encoding")
	}
	bad[i+10] ^= 0x40
	bad = binary.BigEndian.AppendUint32(bad[:len(bad)-4], crc32.Checksum(bad[:len(bad)-4], castagnoli))
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	off := a[3].UncompressedOffset + 10
	if _, err := r.ReadAt(make([]byte, 100), off); !errors.Is(err, ErrIndex) || !strings.Contains(err.Error(), "changed since") {
		t.Fatalf("read with a changed window: %v", err)
	}
}

// Every single-byte corruption and every truncation of the file is an
// error wrapping ErrIndex, as with UnmarshalBinary.
func TestReadFileDetachedCorrupt(t *testing.T) {
	raw := textish(12, 1<<19)
	gz := gzStd(t, raw, 6)
	_, ix := inflateAll(t, gz, 64<<10)
	enc, _ := ix.MarshalBinary()
	path := filepath.Join(t.TempDir(), "ix")
	try := func(b []byte) error {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := ReadFileDetached(path)
		return err
	}
	for i := 0; i < len(enc); i += 1 + i%13 {
		b := bytes.Clone(enc)
		b[i] ^= 0x10
		if err := try(b); !errors.Is(err, ErrIndex) || (i >= len(magic)+1 && !strings.Contains(err.Error(), "checksum mismatch")) {
			t.Fatalf("flip at %d: %v", i, err)
		}
	}
	for n := 0; n < len(enc); n += 1 + n/10 {
		if err := try(enc[:n]); !errors.Is(err, ErrIndex) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if _, err := ReadFileDetached(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
