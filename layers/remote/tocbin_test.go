package remote

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"reflect"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// jsonTOC is the parsed TOC of an eStargz blob, as OpenEStargz parses it.
func jsonTOC(t testing.TB, blob []byte) (*estargz.JTOC, int64) {
	t.Helper()
	off, footer, err := parseFooter(blob[len(blob)-51:])
	if err != nil {
		t.Fatal(err)
	}
	js, err := readTOC(blob[off : int64(len(blob))-footer])
	if err != nil {
		t.Fatal(err)
	}
	var toc estargz.JTOC
	if err := json.Unmarshal(js, &toc); err != nil {
		t.Fatal(err)
	}
	return &toc, off
}

// TestTOCBinRoundTrip: the compact form decodes to the TOC the JSON parses
// to, field for field (every entry kind, chunks, xattrs, the prefetch
// landmark); any damage or truncation is refused.
func TestTOCBinRoundTrip(t *testing.T) {
	g := buildEStargz(t, testEStargzTar(), estargz.WithChunkSize(32<<10),
		estargz.WithPrioritizedFiles([]string{"etc/hostname"}))
	toc, off := jsonTOC(t, g.blob)
	b := marshalTOC(toc, off)
	got, gotOff, err := unmarshalTOC(b)
	if err != nil {
		t.Fatal(err)
	}
	if gotOff != off || !reflect.DeepEqual(got, toc) {
		t.Fatalf("round trip differs (offset %d, want %d)", gotOff, off)
	}
	xattrs := 0
	for _, e := range got.Entries {
		xattrs += len(e.Xattrs)
	}
	if xattrs == 0 || len(got.Entries) < 20 {
		t.Fatalf("%d entries, %d xattrs: the fixture lost its variety", len(got.Entries), xattrs)
	}
	for i := range b {
		bad := append([]byte(nil), b...)
		bad[i] ^= 0x20
		if _, _, err := unmarshalTOC(bad); !errors.Is(err, errTOCBin) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for n := 0; n < len(b); n += 7 {
		if _, _, err := unmarshalTOC(b[:n]); !errors.Is(err, errTOCBin) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
}

// FuzzUnmarshalTOC: no input makes the decoder panic or allocate without
// bound, and what it accepts encodes back to a form that decodes the same.
// The fuzzer writes the body; the test appends its CRC, so that the
// decoder behind the check is what gets explored.
func FuzzUnmarshalTOC(f *testing.F) {
	g := buildEStargz(f, testEStargzTar(), estargz.WithChunkSize(32<<10))
	toc, off := jsonTOC(f, g.blob)
	for _, b := range [][]byte{marshalTOC(toc, off), marshalTOC(&estargz.JTOC{}, 1)} {
		f.Add(b[:len(b)-4])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b := binary.BigEndian.AppendUint32(append([]byte(nil), body...), crc32.Checksum(body, castagnoli))
		toc, off, err := unmarshalTOC(b)
		if err != nil {
			return
		}
		again, off2, err := unmarshalTOC(marshalTOC(toc, off))
		if err != nil || off2 != off || !reflect.DeepEqual(again, toc) {
			t.Fatalf("re-encoding changed the TOC: %v", err)
		}
	})
}
