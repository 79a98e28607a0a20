package store

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// The validators replaced these regular expressions (their compilation
// cost every start of dabba 2 ms); they must accept exactly the same.
func TestValidatorsMatchTheirRegexps(t *testing.T) {
	cases := []struct {
		name string
		re   *regexp.Regexp
		fn   func(string) bool
	}{
		{"container id", regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`), func(s string) bool { return checkContainerID(s) == nil }},
		{"short id", regexp.MustCompile(`^(sha256:)?[a-f0-9]{3,64}$`), isShortID},
		{"variant", regexp.MustCompile(`^[a-z0-9-]{1,64}$`), isVariant},
		{"hex64", regexp.MustCompile(`^[a-f0-9]{64}$`), isHex64},
	}
	const alphabet = "abcfgzAFZ09_.-:/ \x00é"
	rng := rand.New(rand.NewPCG(1, 2))
	inputs := []string{"", "a", "ab", "abc", "sha256:", "sha256:abc", "sha256:ab", "SHA256:abc", "sha256:sha256:abc",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("f", 128),
		strings.Repeat("x", 128), strings.Repeat("x", 129), "-abc", "_abc", ".abc", "abc-", "a.b_c-d"}
	for range 20000 {
		n := rng.IntN(140)
		if rng.IntN(2) == 0 {
			n = rng.IntN(8)
		}
		var b strings.Builder
		if rng.IntN(4) == 0 {
			b.WriteString("sha256:")
		}
		for range n {
			if rng.IntN(3) > 0 {
				b.WriteByte("0123456789abcdef"[rng.IntN(16)])
			} else {
				b.WriteByte(alphabet[rng.IntN(len(alphabet))])
			}
		}
		inputs = append(inputs, b.String())
	}
	for i := range 200 { // 64 hex digits, some with one wrong byte
		b := []byte(strings.Repeat("0", 64))
		for j := range b {
			b[j] = "0123456789abcdef"[rng.IntN(16)]
		}
		if i%3 == 0 {
			b[rng.IntN(64)] = alphabet[rng.IntN(len(alphabet))]
		}
		inputs = append(inputs, string(b), "sha256:"+string(b))
	}
	for _, c := range cases {
		accepted := 0
		for _, s := range inputs {
			want := c.re.MatchString(s)
			if got := c.fn(s); got != want {
				t.Fatalf("%s %q: %v, the regexp says %v", c.name, s, got, want)
			}
			if want {
				accepted++
			}
		}
		if accepted < 10 {
			t.Fatalf("%s: only %d inputs accepted: the test does not exercise it", c.name, accepted)
		}
	}
}
