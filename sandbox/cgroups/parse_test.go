package cgroups

import (
	"strings"
	"testing"
)

func TestParseMemory(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1", 1},
		{"4096", 4096},
		{"512b", 512},
		{"512B", 512},
		{"1k", 1024},
		{"1K", 1024},
		{"1kb", 1024},
		{"1KiB", 1024},
		{"512m", 512 << 20},
		{"512M", 512 << 20},
		{"512mb", 512 << 20},
		{"512 m", 512 << 20},
		{" 2g ", 2 << 30},
		{"1.5g", 3 << 29},
		{"0.5k", 512},
		{"1t", 1 << 40},
		{"8191p", 8191 << 50},
	} {
		got, err := ParseMemory(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseMemoryErrors(t *testing.T) {
	for _, tc := range []struct{ in, why string }{
		{"", "empty"},
		{"   ", "empty"},
		{"-1", "negative"},
		{"-512m", "negative"},
		{"m", "no number"},
		{"abc", "no number"},
		{"12x", "unknown unit"},
		{"12mm", "unknown unit"},
		{"12bb", "unknown unit"},
		{"12 megabytes", "unknown unit"},
		{"1..5g", "malformed"},
		{".5g", "malformed"},
		{"5.g", "malformed"},
		{"9223372036854775808", "too large"},
		{"8192p", "too large"},
		{"99999999999999999999g", "too large"},
		{"1e3", "unknown unit"},
	} {
		_, err := ParseMemory(tc.in)
		if err == nil {
			t.Errorf("ParseMemory(%q): no error, want %q", tc.in, tc.why)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.why) || !strings.Contains(msg, "512m") || !strings.Contains(msg, `"`+tc.in+`"`) {
			t.Errorf("ParseMemory(%q) error %q: want the input, %q and an example", tc.in, msg, tc.why)
		}
	}
}

func TestParseCPUs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
	}{
		{"0", 0}, {"1", 1}, {"1.5", 1.5}, {"0.01", 0.01}, {" 2 ", 2}, {"64", 64},
	} {
		got, err := ParseCPUs(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseCPUs(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, why string }{
		{"", "decimal number"},
		{"one", "decimal number"},
		{"NaN", "decimal number"},
		{"inf", "decimal number"},
		{"0x10", "decimal number"},
		{"1,5", "decimal number"},
		{"-1", "negative"},
		{"0.001", "smallest"},
		{"1e300", "too large"},
	} {
		_, err := ParseCPUs(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), tc.in) {
			t.Errorf("ParseCPUs(%q) error %v: want one naming the input and saying %q", tc.in, err, tc.why)
		}
	}
}
