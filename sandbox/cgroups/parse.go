package cgroups

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// memoryUnits are podman's --memory units (go-units RAMInBytes): binary
// multiples, so "1k" is 1024 bytes. "b" is bytes.
var memoryUnits = map[byte]float64{
	'b': 1,
	'k': 1 << 10,
	'm': 1 << 20,
	'g': 1 << 30,
	't': 1 << 40,
	'p': 1 << 50,
}

// ParseMemory parses a memory size the way podman's --memory does: a
// non-negative number, optionally with a fraction, followed by an optional
// unit b, k, m, g (also t, p), case-insensitive, optionally spelled kb, kib,
// mb, mib, ... All units are binary (1k = 1024). A bare number is bytes.
// "0" means no limit.
func ParseMemory(s string) (int64, error) {
	bad := func(why string) (int64, error) {
		return 0, fmt.Errorf("invalid memory size %q: %s: want a number of bytes with an optional unit b, k, m or g, like 512m or 1g", s, why)
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return bad("empty")
	}
	// Split the number from the unit.
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		if strings.HasPrefix(t, "-") {
			return bad("negative")
		}
		return bad("no number")
	}
	if strings.Count(num, ".") > 1 || strings.HasPrefix(num, ".") || strings.HasSuffix(num, ".") {
		return bad("malformed number")
	}
	mult := 1.0
	if unit != "" {
		m, ok := memoryUnits[unit[0]]
		rest := unit[1:]
		if unit[0] != 'b' {
			rest = strings.TrimPrefix(rest, "i")
			rest = strings.TrimPrefix(rest, "b")
		}
		if !ok || rest != "" {
			return bad("unknown unit " + strconv.Quote(t[i:]))
		}
		mult = m
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return bad("too large")
		}
		if m := int64(mult); n > math.MaxInt64/m {
			return bad("too large")
		}
		return n * int64(mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return bad("malformed number")
	}
	v := f * mult
	if v >= float64(math.MaxInt64) {
		return bad("too large")
	}
	return int64(v), nil
}

// MinCPUs is the smallest --cpus podman accepts: the kernel's smallest CFS
// quota, 1ms, over podman's period of 100ms.
const MinCPUs = 0.01

// cpuPeriod is the CFS period podman (and docker) use for --cpus: 100ms, in
// microseconds. The quota is CPUs times this.
const cpuPeriod = 100000

// ParseCPUs parses --cpus: a non-negative decimal number of CPUs, like 1.5.
// "0" means no limit; anything else below MinCPUs is refused.
func ParseCPUs(s string) (float64, error) {
	t := strings.TrimSpace(s)
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(t, "xXpP_") {
		return 0, fmt.Errorf("invalid number of CPUs %q: want a decimal number like 1.5", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("invalid number of CPUs %q: must not be negative", s)
	}
	if f != 0 && f < MinCPUs {
		return 0, fmt.Errorf("invalid number of CPUs %q: the smallest limit is %.2f", s, MinCPUs)
	}
	if f*cpuPeriod > math.MaxInt64/2 {
		return 0, fmt.Errorf("invalid number of CPUs %q: too large", s)
	}
	return f, nil
}
