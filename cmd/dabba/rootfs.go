package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/sandbox"
	"github.com/dabba/dabba/store"
)

// preparedRootfs is an image made ready to run: its config and the rootfs
// of one container (overlay, or fuse with fuse set).
type preparedRootfs struct {
	config  v1.Config
	rootfs  sandbox.Rootfs
	fuse    *fuseRootfs // the FUSE server of a fuse rootfs
	cleanup func()
	// For the container's record (store.ContainerInfo): the store holding
	// its directory, the image's name and ID, and the rootfs kind.
	st             *store.Store
	image, imageID string
	kind           string
}

// imageFor finds ref in the store, pulling it as policy says.
func imageFor(ctx context.Context, g *globals, st *store.Store, ref string, policy store.PullPolicy, pull store.PullOptions) (*store.Image, error) {
	img, err := st.Lookup(ref)
	switch {
	case policy == store.PullNewer || policy == store.PullAlways:
		pimg, perr := st.Pull(ctx, ref, pull)
		if perr != nil && policy == store.PullNewer && err == nil {
			fmt.Fprintf(g.stderr, "dabba run: warning: --pull newer: %v; running the image the store has\n", perr)
			return img, nil
		}
		return pimg, perr
	case errors.Is(err, store.ErrNotFound) && policy == store.PullNever:
		return nil, fmt.Errorf("%w (--pull never: the registry is not asked)", err)
	case errors.Is(err, store.ErrNotFound):
		slog.Debug("image not in the store, pulling", "stage", "run", "ref", ref)
		return st.Pull(ctx, ref, pull)
	}
	return img, err
}

// prepareRootfs finds ref in the store (pulling it when absent) and makes
// the container's rootfs of the given mode (rootfsFUSE or rootfsOverlay)
// and its upper and work directories. For overlay it extracts each of the
// image's layers once per id map into the store (inside a user namespace
// with maps, so ownership lands on the container's ids); for fuse it
// extracts nothing and opens the layer blobs to serve (rootfs_fuse.go).
// This process holds the container's store lock until cleanup, which
// removes them (containers are temporary: --rm is the only behaviour for
// now); if dabba is killed instead, `dabba gc` or the next `dabba run`
// removes them. The image is found or pulled as policy says (imageFor). With lm.on
// (the mode is then fuse) nothing is pulled: the
// image is opened lazily (startLazyImage: the layers while the namespaces
// are set up) and served as it is fetched.
func prepareRootfs(ctx context.Context, g *globals, ref, id, mode string, maps *sandbox.IDMaps, lm *lazyMode, policy store.PullPolicy, pull store.PullOptions) (*preparedRootfs, error) {
	st, err := store.Open(g.root)
	if err != nil {
		return nil, err
	}
	// Containers whose dabba was killed: cheap when there are none (a
	// directory read, a flock attempt per running container). They may have
	// run under another id map than this one: remove with the full map.
	st.RemoveFunc = storeRemoveFunc
	if n, err := st.RemoveDeadContainers(); n > 0 || err != nil {
		slog.Debug("removed dead containers", "stage", "run", "count", n, "err", err)
	}
	st.RemoveFunc = func(p string) error { return removeInUserNS(p, maps) }
	if lm != nil && lm.on {
		lo, err := startLazyImage(ctx, st, ref, lm)
		if err != nil {
			return nil, err
		}
		var cfg v1.Config
		if lo.Image.Config != nil {
			cfg = lo.Image.Config.Config
		}
		return prepareFUSERootfs(g, st, nil, lo, cfg, id, maps)
	}
	img, err := imageFor(ctx, g, st, ref, policy, pull)
	if err != nil {
		return nil, err
	}
	var cfg v1.Config
	if img.Config != nil {
		cfg = img.Config.Config
	}
	if mode == rootfsFUSE {
		return prepareFUSERootfs(g, st, img, nil, cfg, id, maps)
	}
	diffIDs := make([]v1.Hash, 0, len(img.Layers))
	lower := make([]string, 0, len(img.Layers))
	variant := layerVariant(maps)
	for _, l := range img.Layers {
		l := l
		dir, err := st.LayerDir(ctx, l.DiffID, variant, func(ctx context.Context, tmp string) error {
			return extractInUserNS(ctx, st.BlobPath(l.Digest), tmp, l.Digest.String(), maps)
		})
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		lower = append(lower, dir)
		diffIDs = append(diffIDs, l.DiffID)
	}
	release, err := st.HoldLayers(ctx, diffIDs)
	if err != nil {
		return nil, err
	}
	cdir, err := st.ContainerDir(id)
	if err != nil {
		release()
		return nil, err
	}
	cleanup := func() {
		release()
		if err := st.RemoveContainerDir(id); err != nil {
			fmt.Fprintf(g.stderr, "dabba run: removing container %s: %v\n", id[:12], err)
		}
	}
	upper, work := filepath.Join(cdir, "upper"), filepath.Join(cdir, "work")
	dirs := []string{upper, work}
	if len(lower) == 0 {
		// overlayfs needs a lower layer; an image without layers gets an empty one.
		empty := filepath.Join(cdir, "empty")
		dirs = append(dirs, empty)
		lower = append(lower, empty)
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			cleanup()
			return nil, fmt.Errorf("container %s: %w", id[:12], err)
		}
	}
	return &preparedRootfs{
		config:  cfg,
		rootfs:  sandbox.Rootfs{Type: sandbox.RootfsOverlay, Lower: lower, Upper: upper, Work: work},
		cleanup: cleanup,
		st:      st, image: img.Name, imageID: img.ID, kind: rootfsOverlay,
	}, nil
}

// layerVariant names the id map layers are extracted under (see
// store.Store.LayerDir): files land on the map's host ids, so a layer
// extracted under the single-id map (everything the caller's) must not serve
// a full-map container (where it would show root-owned files for every
// owner), nor the reverse (where files of other owners show as nobody), nor
// a map from before /etc/subuid changed.
func layerVariant(maps *sandbox.IDMaps) string {
	if maps.Single {
		return "single"
	}
	h := sha256.New()
	for _, m := range [][]sandbox.IDMapping{maps.UID, maps.GID} {
		for _, e := range m {
			fmt.Fprintf(h, "%d %d %d\n", e.ContainerID, e.HostID, e.Size)
		}
		h.Write([]byte("-\n"))
	}
	return "map-" + hex.EncodeToString(h.Sum(nil))[:16]
}

// extractInUserNS extracts the layer blob into dir by re-executing dabba as
// `init-extract extract` in a user namespace with maps.
func extractInUserNS(ctx context.Context, blob, dir, digest string, maps *sandbox.IDMaps) error {
	slog.Debug("extracting layer", "stage", "run", "layer", digest, "dir", dir)
	return runUserNSChild(ctx, maps, "extract", blob, dir, digest, fmt.Sprint(maps.Single))
}

// removeInUserNS removes a tree holding files of subordinate ids, as root
// of a user namespace with maps.
func removeInUserNS(p string, maps *sandbox.IDMaps) error {
	return runUserNSChild(context.Background(), maps, "remove", p)
}

func runUserNSChild(ctx context.Context, maps *sandbox.IDMaps, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "/proc/self/exe", append([]string{childExtract}, args...)...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = []string{}
	cmd.Stderr = &stderr
	if err := sandbox.RunInUserNS(cmd, maps); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return errors.New(msg)
		}
		return fmt.Errorf("%s in a user namespace: %w", args[0], err)
	}
	return nil
}

// runExtractChild is the hidden `init-extract` child: "extract BLOB DIR
// DIGEST SINGLE" or "remove PATH", run as root of a user namespace.
func runExtractChild(args []string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := sandbox.EnterUserNS(); err != nil {
		return fail(err)
	}
	switch {
	case len(args) == 5 && args[0] == "extract":
		f, err := os.Open(args[1])
		if err != nil {
			return fail(fmt.Errorf("layer blob: %w", err))
		}
		defer f.Close()
		single := args[4] == "true"
		err = layers.Extract(args[2], f, layers.ExtractOptions{
			Layer:             args[3],
			IgnoreChownErrors: single,
			SkipDevices:       true,
		})
		if err != nil {
			if !single && strings.Contains(err.Error(), "chown") {
				return fail(fmt.Errorf("%w (the layer has ids outside your subordinate range: give the user more ids in /etc/subuid and /etc/subgid)", err))
			}
			return fail(err)
		}
		return 0
	case len(args) == 2 && args[0] == "remove":
		if err := os.RemoveAll(args[1]); err != nil {
			return fail(err)
		}
		return 0
	}
	return fail(fmt.Errorf("init-extract: bad arguments %q", args))
}
