package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Contender is one way to pull or run an image, described by its command
// lines. In each word, {dabba} is the dabba binary, {store} the contender's
// own store directory (emptied before each cold run), {ref} the image
// reference on the benchmark's registry, {bundle} the runc bundle prepared
// for the command, {id} a container name unique to the run; a word "{cmd}"
// expands to the command's words.
type Contender struct {
	Name string
	// Pull fetches the image into the store (the cold-pull scenario); nil
	// when the contender does not pull.
	Pull []string
	// Run runs {cmd} in a container of the image, pulling it first when the
	// store lacks it; nil when the contender does not run containers.
	Run []string
	// Warm makes the image local before the warm scenarios, unmeasured:
	// Pull when nil. For lazy mode it is a first run that fills the cache.
	Warm []string
	// Cold says the contender takes part in the cold scenarios (runc needs a
	// prepared bundle and does not).
	Cold bool
	// Lazy says the contender reads the image through a lazy index (a
	// dabba index, or an eStargz layer's TOC): its rows fail when the
	// index of a gzip+index image could not be pushed, and by default it
	// runs on the forms gzip+index and estargz rather than gzip (see
	// harness.runsOn). Its Warm step publishes the index only in form
	// gzip: gzip+index has its own, pushed (and optimized) before the
	// measured runs, and eStargz needs none.
	Lazy bool
	// Prepare, when set, is Go code run as root before the warm scenarios
	// (runc's bundle); Bundle then gives the bundle for a command.
	Prepare func(ctx context.Context, h *harness, c *Contender, img *benchImage) error
	Bundle  func(h *harness, c *Contender, img *benchImage, cmd []string) (string, error)
}

// defaultPeer is the contender ratios are taken against unless --peer
// names another.
const defaultPeer = "podman"

var allContenders = []string{"dabba", "dabba-overlay", "dabba-fuse", "dabba-lazy", "dabba-lazy-nobg", "podman", "skopeo", "runc"}

// defaultContenders is allContenders without dabba-lazy-nobg, a
// diagnostic of the lazy mode run only when named.
func defaultContenders() []string {
	var out []string
	for _, c := range allContenders {
		if c != "dabba-lazy-nobg" {
			out = append(out, c)
		}
	}
	return out
}

// contenders returns the declarative description of each contender.
func contenders() map[string]*Contender {
	dabba := []string{"{dabba}", "--root", "{store}"}
	// podman's --tmpdir stays its default, $XDG_RUNTIME_DIR/libpod/tmp (on
	// the harness's tmpfs): it holds the pause process's pid, so all runs
	// share one user namespace, as a user's podman does.
	podman := []string{"podman", "--root", "{store}/root", "--runroot", "{store}/run"}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	dabbaPull := cat(dabba, []string{"pull", "-q", "{ref}"})
	cs := []*Contender{
		// dabba's pull alone, for the cold-pull rows.
		{Name: "dabba", Pull: dabbaPull, Cold: true},
		{Name: "dabba-overlay", Cold: true, Warm: dabbaPull,
			Run: cat(dabba, []string{"run", "--rm", "--network", "none", "--rootfs", "overlay", "{ref}", "{cmd}"})},
		{Name: "dabba-fuse", Cold: true, Warm: dabbaPull,
			Run: cat(dabba, []string{"run", "--rm", "--network", "none", "--rootfs", "fuse", "{ref}", "{cmd}"})},
		// In form gzip+index the harness pushes the image's lazy index
		// (`dabba index push`) right after the image, before any measured
		// run, so the cold rows read through it; in form estargz the
		// layers carry their TOC. In form gzip the image has no index
		// during the cold rows (their layers are fetched whole, the run
		// says so in one line); Warm then publishes it from a store of
		// its own, removed after, so the warm runs read lazily through
		// the index, not from a store the push filled (Warm runs in form
		// gzip only: see Lazy). The first /bin/true fills the chunk
		// cache.
		{Name: "dabba-lazy", Cold: true, Lazy: true,
			Warm: []string{"sh", "-c", `p=$(mktemp -d) && {dabba} --root "$p" index push -q {ref} >/dev/null && rm -rf "$p"`},
			Run:  cat(dabba, []string{"run", "--rm", "--network", "none", "--lazy", "{ref}", "{cmd}"})},
		// --lazy=nobackground: only the bytes the command reads (and the
		// index), without the background fetch of the rest of the image
		// sharing the link; not in the default set.
		{Name: "dabba-lazy-nobg", Cold: true, Lazy: true,
			Warm: []string{"sh", "-c", `p=$(mktemp -d) && {dabba} --root "$p" index push -q {ref} >/dev/null && rm -rf "$p"`},
			Run:  cat(dabba, []string{"run", "--rm", "--network", "none", "--lazy=nobackground", "{ref}", "{cmd}"})},
		{Name: "podman", Cold: true,
			Pull: cat(podman, []string{"pull", "-q", "--tls-verify=false", "{ref}"}),
			Run:  cat(podman, []string{"run", "--rm", "--network", "none", "--tls-verify=false", "{ref}", "{cmd}"})},
		{Name: "skopeo", Cold: true,
			Pull: []string{"skopeo", "copy", "-q", "--src-tls-verify=false", "docker://{ref}", "oci:{store}/oci:bench"}},
		{Name: "runc",
			Run:     []string{"runc", "--root", "{store}/state", "run", "--bundle", "{bundle}", "{id}"},
			Prepare: prepareRunc, Bundle: runcBundle},
	}
	m := map[string]*Contender{}
	for _, c := range cs {
		m[c.Name] = c
	}
	return m
}

// expand fills a command template.
func expand(tmpl []string, vars map[string]string, cmd []string) []string {
	var out []string
	for _, w := range tmpl {
		if w == "{cmd}" {
			out = append(out, cmd...)
			continue
		}
		for k, v := range vars {
			w = strings.ReplaceAll(w, "{"+k+"}", v)
		}
		out = append(out, w)
	}
	return out
}

// prepareRunc extracts the image's merged tree into the store as runc's
// root filesystem, owned by the user (runc's rootless spec maps only the
// user's id), and makes the template spec with `runc spec --rootless`.
func prepareRunc(ctx context.Context, h *harness, c *Contender, img *benchImage) error {
	store := h.storeDir(c, img)
	rootfs := filepath.Join(store, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	if err := extractImage(ctx, img, rootfs); err != nil {
		return fmt.Errorf("runc bundle of %s: %w", img.label(), err)
	}
	if out, err := exec.CommandContext(ctx, "chown", "-R", fmt.Sprintf("%d:%d", h.user.uid, h.user.gid), store).CombinedOutput(); err != nil {
		return fmt.Errorf("chown of the runc bundle: %w: %s", err, out)
	}
	spec := filepath.Join(store, "spec")
	if err := h.mkdirUser(spec); err != nil {
		return err
	}
	res := h.exec(ctx, []string{"runc", "spec", "--rootless"}, spec, nil)
	if res.Err != nil {
		return fmt.Errorf("runc spec --rootless: %w", res.Err)
	}
	return nil
}

// runcBundle writes (once per command) a bundle whose config runs cmd on
// the prepared root filesystem.
func runcBundle(h *harness, c *Contender, img *benchImage, cmd []string) (string, error) {
	store := h.storeDir(c, img)
	raw, err := os.ReadFile(filepath.Join(store, "spec", "config.json"))
	if err != nil {
		return "", fmt.Errorf("runc spec: %w", err)
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		return "", fmt.Errorf("runc spec: %w", err)
	}
	proc, _ := spec["process"].(map[string]any)
	root, _ := spec["root"].(map[string]any)
	if proc == nil || root == nil {
		return "", fmt.Errorf("runc spec %s lacks process or root", filepath.Join(store, "spec", "config.json"))
	}
	proc["args"] = cmd
	proc["terminal"] = false
	proc["env"] = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	root["path"] = filepath.Join(store, "rootfs")
	root["readonly"] = false
	out, _ := json.MarshalIndent(spec, "", "  ")
	dir := filepath.Join(store, "bundle-"+shortHash(strings.Join(cmd, "\x00")))
	if err := h.mkdirUser(dir); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), out, 0o644); err != nil {
		return "", err
	}
	return dir, nil
}
