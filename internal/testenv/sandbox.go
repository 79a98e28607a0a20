package testenv

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Output is what a command the user ran printed, and how it ended.
type Output struct {
	Stdout, Stderr string
	Code           int
}

// RunAs runs name args as the user with Env(home) plus env, stdin as input,
// and returns its output and exit status (-1 when it did not exit normally).
// The process group is killed when ctx ends.
func (u *User) RunAs(ctx context.Context, home string, env []string, stdin string, name string, args ...string) Output {
	cmd := u.Command(ctx, home, name, args...)
	cmd.Env = mergeEnv(cmd.Env, env)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return Output{out.String(), errb.String(), code}
}

func mergeEnv(base, extra []string) []string {
	out := append([]string{}, base...)
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, b := range out {
			if strings.HasPrefix(b, k+"=") {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

// SyncBuffer is a bytes.Buffer safe for one writer and concurrent readers,
// with a wait for expected output.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitFor waits until the output after offset from contains s and returns
// the offset just past it; it fails t after a generous deadline (a hang, not
// a speed check).
func (b *SyncBuffer) WaitFor(t testing.TB, from int, s string) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		all := b.String()
		if from > len(all) {
			from = len(all)
		}
		if i := strings.Index(all[from:], s); i >= 0 {
			return from + i + len(s)
		}
		if time.Now().After(deadline) {
			t.Fatalf("output never contained %q; after offset %d it is:\n%s", s, from, all[from:])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
