package sandbox

import (
	"errors"
	"strings"
)

// DefaultPath is the PATH a container gets when its image sets none (podman's).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ErrNoCommand is returned by ResolveArgs when neither the image nor the
// caller gives a command.
var ErrNoCommand = errors.New("sandbox: no command: the image has no Entrypoint or Cmd; give one after the image name")

// ResolveArgs applies podman's rules to an image's Entrypoint and Cmd: an
// entrypoint given by the caller (entrypoint non-nil; an empty slice clears
// it) replaces the image's and drops the image's Cmd; arguments given after
// the image replace Cmd. The command is the entrypoint followed by Cmd.
func ResolveArgs(imageEntrypoint, imageCmd []string, entrypoint *[]string, args []string) ([]string, error) {
	ep, cmd := imageEntrypoint, imageCmd
	if entrypoint != nil {
		ep, cmd = *entrypoint, nil
	}
	if len(args) > 0 {
		cmd = args
	}
	out := append(append([]string{}, ep...), cmd...)
	if len(out) == 0 {
		return nil, ErrNoCommand
	}
	return out, nil
}

// BaseEnv builds a container's environment in podman's order: PATH, TERM
// (with a terminal) and HOSTNAME, then the image's Env, then the caller's
// (K=V keeps a value containing '=' whole; a bare K takes the value from
// lookup, and is dropped when lookup has none). Later entries replace
// earlier ones with the same key, keeping the first position.
func BaseEnv(hostname string, tty bool, imageEnv, userEnv []string, lookup func(string) (string, bool)) []string {
	base := []string{"PATH=" + DefaultPath}
	if tty {
		base = append(base, "TERM=xterm")
	}
	base = append(base, "container=dabba")
	if hostname != "" {
		base = append(base, "HOSTNAME="+hostname)
	}
	base = append(base, imageEnv...)
	for _, kv := range userEnv {
		if !strings.Contains(kv, "=") {
			if lookup == nil {
				continue
			}
			v, ok := lookup(kv)
			if !ok {
				continue
			}
			kv += "=" + v
		}
		base = append(base, kv)
	}
	return MergeEnv(base)
}

// MergeEnv removes entries whose key appears again later, keeping the later
// value at the earlier position.
func MergeEnv(env []string) []string {
	idx := map[string]int{}
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// envGet returns the value of key in env.
func envGet(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}
