package layers

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/dabba/dabba/layers/layertest"
)

func TestDetectCompression(t *testing.T) {
	tests := []struct {
		name string
		peek []byte
		want Compression
	}{
		{"empty", nil, Uncompressed},
		{"one byte", []byte{0x1f}, Uncompressed},
		{"gzip", []byte{0x1f, 0x8b, 0x08, 0x00}, Gzip},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00}, Zstd},
		{"zstd short", []byte{0x28, 0xb5, 0x2f}, Uncompressed},
		{"tar", []byte("etc/passwd\x00\x00"), Uncompressed},
		{"real gzip", layertest.Gzip([]byte("x")), Gzip},
		{"real zstd", layertest.Zstd([]byte("x")), Zstd},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DetectCompression(tt.peek); got != tt.want {
				t.Errorf("DetectCompression = %v, want %v", got, tt.want)
			}
		})
	}
	if s := Compression(9).String(); s != "compression(9)" {
		t.Errorf("String of unknown = %q", s)
	}
}

func TestDecompress(t *testing.T) {
	plain := layertest.Tar(layertest.File("a", strings.Repeat("hello world ", 10000)))
	gz := layertest.Gzip(plain)
	zs := layertest.Zstd(plain)
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0xff
		return c
	}
	tests := []struct {
		name    string
		in      []byte
		want    Compression
		corrupt bool // error wrapping ErrCorrupt, at open or read
	}{
		{"empty", nil, Uncompressed, false},
		{"plain", plain, Uncompressed, false},
		{"gzip", gz, Gzip, false},
		{"zstd", zs, Zstd, false},
		{"gzip truncated", gz[:len(gz)/2], Gzip, true},
		{"gzip missing trailer", gz[:len(gz)-4], Gzip, true},
		{"gzip header only", gz[:2], Gzip, true},
		{"gzip corrupt body", flip(gz, len(gz)/2), Gzip, true},
		{"gzip bad checksum", flip(gz, len(gz)-6), Gzip, true},
		{"zstd truncated", zs[:len(zs)/2], Zstd, true},
		{"zstd magic only", zs[:4], Zstd, true},
		{"zstd corrupt body", flip(zs, len(zs)/2), Zstd, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, c, err := Decompress(bytes.NewReader(tt.in))
			if err == nil {
				if c != tt.want {
					t.Errorf("compression %v, want %v", c, tt.want)
				}
				var got []byte
				got, err = io.ReadAll(rc)
				rc.Close()
				if err == nil && !bytes.Equal(got, plain) && len(tt.in) > 0 {
					t.Fatalf("decompressed %d bytes, differ from the %d written", len(got), len(plain))
				}
			}
			if tt.corrupt {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("err = %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
