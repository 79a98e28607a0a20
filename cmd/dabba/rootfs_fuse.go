package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/fs"
	"github.com/dabba/dabba/internal/cli"
	"github.com/dabba/dabba/sandbox"
	"github.com/dabba/dabba/store"
)

// The kinds of image rootfs `dabba run --rootfs` chooses between.
const (
	rootfsFUSE    = "fuse"
	rootfsOverlay = "overlay"
)

// chooseRootfs resolves --rootfs for an image: "fuse" and "overlay" as
// asked, "" (the default) fuse where /dev/fuse is usable, else overlay. why
// says what decided, for the debug log.
func chooseRootfs(flag string) (mode, why string) {
	if flag != "" {
		return flag, "--rootfs " + flag
	}
	if err := fuseUsable(); err != nil {
		return rootfsOverlay, fmt.Sprintf("the default fuse is not usable (%v): extracting the layers", err)
	}
	return rootfsFUSE, "default: /dev/fuse is usable"
}

// fuseDevice is the FUSE device; a variable for tests.
var fuseDevice = "/dev/fuse"

// fuseUsable reports whether this user can open /dev/fuse for reading and
// writing, which the container's init needs to mount the image over FUSE
// in its namespaces.
func fuseUsable() error {
	f, err := os.OpenFile(fuseDevice, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// fuseRootfs is the FUSE side of a container whose root is the image served
// by dabba-fs: the filesystem, its layer blobs, and the server of the
// /dev/fuse descriptor the container's init passes back.
type fuseRootfs struct {
	image string
	fsys  *fs.FS
	blobs *fs.Blobs        // the layer blobs in the store; nil when lazy
	lazy  *store.LazyImage // the image fetched as read (--lazy); nil otherwise

	// ready is closed once fsys and blobs are set, or err (prepareFUSE
	// builds them in the background); nil when they were set at once.
	ready chan struct{}
	err   error
}

// prepareFUSE starts making img ready to serve over FUSE: the merged tree
// of the store's per-layer indexes and the layer blobs opened for reading
// in place (gzip through its checkpoints, every read checked against the
// blob's chunk checksums). Nothing is extracted. cdir is the container's
// directory (it holds a decompressed copy of a zstd layer, unlinked at
// once). The work (33-54 ms on 2026-12-07 for the bench's large image,
// 14,350 inodes: the saved merged tree 15-22 ms of it, the checkpoints,
// read without their windows, 4 ms) runs while the container's namespaces
// are set up, which took longer; Serve waits for it, and fails with its
// error, which stops the container before its command starts.
func prepareFUSE(st *store.Store, img *store.Image, cdir string, maps *sandbox.IDMaps) *fuseRootfs {
	r := &fuseRootfs{image: img.Name, ready: make(chan struct{})}
	go func() {
		defer close(r.ready)
		r.fsys, r.blobs, r.err = buildFUSE(st, img, cdir, maps)
	}()
	return r
}

// startGC is how long after the FUSE rootfs is prepared the GC runs at
// 400: measured on 2026-12-07, GOGC=400 for the whole of `dabba run
// IMG /bin/true` (dabba-fs, 10 alternated runs each) took the median from
// 113 to 103 ms for minbase and from 117 to 105 ms for the large image;
// GOGC=off did no better (102 and 104 ms).
const startGC = 2 * time.Second

func buildFUSE(st *store.Store, img *store.Image, cdir string, maps *sandbox.IDMaps) (*fs.FS, *fs.Blobs, error) {
	start := time.Now()
	// Building allocates a few MB at once and keeps most of it (the
	// tree), and the container's start that follows asks the server for
	// its first files and libraries while every reply is awaited: a
	// collection then (with the default, one every few MB of a heap this
	// small) takes CPU from the server on a two-CPU machine. The GC runs
	// at 400 until the start is over (startGC), then with the default:
	// a long-running container's server keeps its heap small.
	old := debug.SetGCPercent(400)
	time.AfterFunc(startGC, func() { debug.SetGCPercent(old) })
	tree, bs, err := cli.ImageTree(st, img)
	if err != nil {
		return nil, nil, &storeCopyError{err: err, image: img.Name}
	}
	blobs, err := fs.OpenBlobs(cdir, bs)
	if err != nil {
		return nil, nil, &storeCopyError{err: fmt.Errorf("image %s: %w", img.Name, err), image: img.Name}
	}
	opts := fuseOptions(maps)
	opts.PushAhead = true // the blobs are local
	fsys, err := fs.New(tree, blobs, opts)
	if err != nil {
		blobs.Close()
		return nil, nil, fmt.Errorf("image %s: %w", img.Name, err)
	}
	slog.Debug("fuse rootfs ready", "stage", "run", "image", img.Name, "layers", len(bs), "inodes", tree.NumInodes(), "took", time.Since(start))
	return fsys, blobs, nil
}

// storeCopyError is a failure to read the store's files of an image (a
// layer's index, checkpoints or blob): `dabba pull` repairs them, rebuilding
// what derives from a blob from the local copy and fetching a missing or
// truncated blob again.
type storeCopyError struct {
	err   error
	image string
}

func (e *storeCopyError) Error() string {
	return fmt.Sprintf("%v; `dabba pull %s` repairs the store's copy", e.err, e.image)
}

func (e *storeCopyError) Unwrap() error { return e.err }

// wait waits until the filesystem is built (at once for a lazy image) and
// returns the error of building it.
func (r *fuseRootfs) wait() error {
	if r.ready != nil {
		<-r.ready
	}
	return r.err
}

// fuseOptions are the dabba-fs options of a container with maps.
func fuseOptions(maps *sandbox.IDMaps) fs.Options {
	opts := fs.Options{
		// Each failed read is logged here; the count and the first
		// reach the user once, when the container exits (report).
		OnError: func(err error) { slog.Debug("read failed", "stage", "fs", "err", err) },
	}
	if maps.Single {
		// Only the caller's id is mapped: every file is root's, as in
		// the extracted fallback, where chown was skipped.
		opts.IDs = func(uint32, uint32) (uint32, uint32) { return 0, 0 }
	}
	return opts
}

// prepareLazyFUSE starts making the lazily opening image lo ready to
// serve over FUSE, in the background as prepareFUSE does: once lo is open,
// its merged tree, with the LazyImage reading (fetching, verifying,
// caching) the bytes of the files as the container reads them.
func prepareLazyFUSE(lo *store.LazyOpening, maps *sandbox.IDMaps) *fuseRootfs {
	r := &fuseRootfs{image: lo.Image.Name, ready: make(chan struct{})}
	go func() {
		defer close(r.ready)
		li, err := lo.Wait()
		if err != nil {
			r.err = &lazyOpenError{err}
			return
		}
		logLazyImage(li)
		fsys, err := fs.New(li.Tree, li, fuseOptions(maps))
		if err != nil {
			li.Close()
			r.err = fmt.Errorf("image %s: %w", li.Image.Name, err)
			return
		}
		slog.Debug("lazy fuse rootfs ready", "stage", "run", "image", li.Image.Name, "layers", len(li.Layers), "inodes", li.Tree.NumInodes())
		r.fsys, r.lazy = fsys, li
	}()
	return r
}

// lazyOpenError is the failure to open a lazy image's layers: its message
// says what went wrong and what to do.
type lazyOpenError struct{ err error }

func (e *lazyOpenError) Error() string { return e.err.Error() }
func (e *lazyOpenError) Unwrap() error { return e.err }

// Serve implements sandbox.FUSEServer: it serves the image on the
// /dev/fuse descriptor the container's init mounted inside its namespaces,
// in goroutines of this process. The session ends when the mount goes,
// that is when the container's mount namespace dies with its last process;
// if dabba dies first, the kernel aborts the connection and the
// container's reads fail (its init dies too: Pdeathsig).
func (r *fuseRootfs) Serve(ctx context.Context, dev *os.File) (stop func() error, err error) {
	if err := r.wait(); err != nil {
		return nil, err
	}
	srv, err := fs.Serve(dev, r.fsys, fs.MountOptions{Name: r.image, AllowOther: true})
	if err != nil {
		return nil, err
	}
	slog.Debug("serving the image", "stage", "fs", "image", r.image)
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	return func() error {
		select {
		case <-done:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("the FUSE session of the image is still open 10s after the container ended")
		}
	}, nil
}

// report returns the one line to print about the image's reads after the
// container exited: "" when every read succeeded.
func (r *fuseRootfs) report(ref string) string {
	if r.wait() != nil {
		return "" // the container did not start: its error says why
	}
	n, first := r.fsys.Errors()
	if n == 0 {
		return ""
	}
	s := "s"
	if n == 1 {
		s = ""
	}
	if r.lazy != nil && !errors.Is(first, fs.ErrCorrupt) {
		// Fetched bytes that did not verify; a layer already in the
		// store (fs.ErrCorrupt) is the store's copy, as below.
		return fmt.Sprintf("dabba run: %d read%s of the image's files failed (the container got EIO, never unverified bytes): %v; the registry of %s sent bytes that do not match the image's digests: run again, or fetch the image whole with `dabba pull %s`",
			n, s, first, r.image, ref)
	}
	return fmt.Sprintf("dabba run: %d read%s of the image's files failed (the container got EIO): %v; the store's copy of %s is damaged: remove it with `dabba rmi %s` and pull it again",
		n, s, first, r.image, ref)
}

// startBackground starts fetching the rest of a lazy image (no-op
// otherwise), once the container runs.
func (r *fuseRootfs) startBackground() {
	go func() {
		if r.wait() == nil && r.lazy != nil {
			r.lazy.StartBackground()
		}
	}()
}

// close closes the layer blobs; for a lazy image it stops the background
// fetch, saves the files read for the next run's prefetch, and logs the
// traffic of the run (at debug level: "lazy: fetched N bytes in M
// requests").
func (r *fuseRootfs) close() {
	if r.wait() != nil {
		return
	}
	fst := r.fsys.Stats()
	slog.Debug(fmt.Sprintf("fuse: %d reads, %d bytes pushed ahead", fst.Reads, fst.Pushed), "stage", "fs", "image", r.image)
	if r.blobs != nil {
		r.blobs.Close()
	}
	if r.lazy == nil {
		return
	}
	if err := r.lazy.Close(); err != nil {
		slog.Warn("closing the lazy image", "stage", "lazy", "image", r.image, "err", err)
	}
	st := r.lazy.Stats()
	slog.Debug(fmt.Sprintf("lazy: fetched %d bytes in %d requests", st.BytesFetched, st.Requests), "stage", "lazy",
		"image", r.image, "index_bytes", st.IndexBytes, "whole_bytes", st.WholeBytes, "retries", st.Retries, "range_ignored", st.RangeIgnored)
}

// fuseDirs makes the container's upper and work directories for the
// overlay over the FUSE mount.
func fuseDirs(cdir string) (upper, work string, err error) {
	upper, work = filepath.Join(cdir, "upper"), filepath.Join(cdir, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", "", err
		}
	}
	return upper, work, nil
}

// prepareFUSERootfs is prepareRootfs for a fuse rootfs: the container's
// directory with its upper and work, and the image ready to serve: img
// from the store's blobs, or lo (not nil with --lazy) as fetched. The
// image is closed on failure and by cleanup.
func prepareFUSERootfs(g *globals, st *store.Store, img *store.Image, lo *store.LazyOpening, cfg v1.Config, id string, maps *sandbox.IDMaps) (*preparedRootfs, error) {
	cdir, err := st.ContainerDir(id)
	if err != nil {
		if lo != nil {
			lo.Close()
		}
		return nil, err
	}
	remove := func() {
		if err := st.RemoveContainerDir(id); err != nil {
			fmt.Fprintf(g.stderr, "dabba run: removing container %s: %v\n", id[:12], err)
		}
	}
	upper, work, err := fuseDirs(cdir)
	var fr *fuseRootfs
	switch {
	case err != nil:
		err = fmt.Errorf("container %s: %w", id[:12], err)
	case lo != nil:
		fr = prepareLazyFUSE(lo, maps)
	default:
		fr = prepareFUSE(st, img, cdir, maps)
	}
	if err != nil {
		if lo != nil {
			lo.Close()
		}
		remove()
		return nil, err
	}
	src, kind := img, rootfsFUSE
	if lo != nil {
		src, kind = lo.Image, "lazy"
	}
	return &preparedRootfs{
		st: st, image: src.Name, imageID: src.ID, kind: kind,
		config: cfg,
		// DABBA_FUSE_OPTIONS: extra options of the FUSE mount, comma
		// separated (for the kernel's fuse filesystem, e.g. max_read=N).
		rootfs: sandbox.Rootfs{Type: sandbox.RootfsFUSE, Upper: upper, Work: work, FUSEOptions: os.Getenv("DABBA_FUSE_OPTIONS")},
		fuse:   fr,
		cleanup: func() {
			fr.close()
			remove()
		},
	}, nil
}
