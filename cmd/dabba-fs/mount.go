package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/pflag"

	"github.com/dabba/dabba/fs"
)

func newMountCmd(g *globals) *command {
	flags := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	layerList := flags.String("layers", "", "serve these layer files (tar, tar.gz or tar.zst; comma-separated, bottom first) instead of IMAGE")
	debug := flags.BoolP("debug", "d", false, "log every FUSE request and reply")
	allowOther := flags.Bool("allow-other", false, "let other users use the mount (outside a user namespace, an unprivileged user needs user_allow_other in /etc/fuse.conf)")
	pushAhead := flags.Bool("push-ahead", true, "while a reader reads the tree in order (tar, cp -a) or a file through, write what it will read next into the kernel's page cache before it asks")
	uidOffset := flags.Uint32("uid-offset", 0, "add this to every file's uid (for a mount made outside the user namespace that will use it)")
	gidOffset := flags.Uint32("gid-offset", 0, "add this to every file's gid")
	fuseFD := flags.Int("fuse-fd", -1, "serve this inherited /dev/fuse descriptor, already mounted by the process that passed it, instead of mounting")
	return &command{
		name:  "mount",
		usage: "[flags] IMAGE MOUNTPOINT | --layers A.tar,B.tar.gz MOUNTPOINT",
		short: "mount an image read-only and serve it in the foreground until unmounted or interrupted",
		flags: flags,
		run: func(ctx context.Context, g *globals, args []string) error {
			want := 2 // IMAGE MOUNTPOINT
			if *layerList != "" {
				want--
			}
			if *fuseFD >= 0 {
				want--
			}
			if len(args) != want {
				return usagef("want %s", map[int]string{0: "no arguments", 1: "one argument", 2: "IMAGE and MOUNTPOINT"}[want]+
					" (IMAGE is replaced by --layers, MOUNTPOINT by --fuse-fd)")
			}
			ref := ""
			if *layerList == "" {
				ref, args = args[0], args[1:]
			}
			if len(args) == 1 {
				// Fail before unpacking anything.
				if fi, err := os.Stat(args[0]); err != nil {
					return fmt.Errorf("mount point: %w", err)
				} else if !fi.IsDir() {
					return fmt.Errorf("mount point %s is not a directory", args[0])
				}
			}
			im, err := openImage(g, ref, *layerList)
			if err != nil {
				return err
			}
			defer im.close()
			opts := fs.Options{PushAhead: *pushAhead}
			if *uidOffset != 0 || *gidOffset != 0 {
				opts.IDs = fs.Shift(*uidOffset, *gidOffset)
			}
			fsys, err := fs.New(im.tree, im.src, opts)
			if err != nil {
				return err
			}
			mo := fs.MountOptions{Name: im.name, AllowOther: *allowOther, Debug: *debug}
			var srv *fs.Server
			if *fuseFD >= 0 {
				srv, err = fs.Serve(os.NewFile(uintptr(*fuseFD), "/dev/fuse"), fsys, mo)
			} else {
				srv, err = fs.Mount(args[0], fsys, mo)
			}
			if err != nil {
				return err
			}
			slog.Info("serving", "stage", "fs", "image", im.name, "dir", srv.Dir(), "inodes", im.tree.NumInodes())
			done := make(chan struct{})
			go func() { srv.Wait(); close(done) }()
			select {
			case <-done:
				slog.Info("unmounted", "stage", "fs")
			case <-ctx.Done():
				if srv.Dir() != "" {
					if err := srv.Unmount(); err != nil {
						return err
					}
				}
			}
			if n, first := fsys.Errors(); n > 0 {
				return fmt.Errorf("%d read errors while serving; the first: %w", n, first)
			}
			return nil
		},
	}
}
