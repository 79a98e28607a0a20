// Package fs serves an image's merged layers (a layers.Tree) as a read-only
// FUSE filesystem, reading file contents from the layers' tar streams by
// offset, without extracting anything.
//
//	tree, _ := layers.Merge(indexes)
//	src, _ := fs.OpenTarFiles(tarPaths, fs.TarFilesOptions{})
//	f, _ := fs.New(tree, src, fs.Options{})
//	srv, _ := fs.Mount("/mnt", f, fs.MountOptions{AllowOther: true})
//	defer srv.Unmount()
//
// # Shape
//
// FS implements go-fuse's fuse.RawFileSystem directly instead of building a
// tree of fs.Inode: the kernel's node id of a file is its inode number in
// the merged tree, so the server keeps nothing per node beyond the tree
// (plus 4 bytes for the parent of "..") however many nodes the kernel holds.
// go-fuse's fs.Inode tree costs 381 bytes per name on top of the merged
// tree (measured: 100k names, mounted and walked: the Inode, its entries in
// the parent's children map and slice, its parent record, the bridge's node
// table), where the whole budget is 200 bytes per entry and the tree takes
// 170; with hour-long timeouts the kernel keeps every node it has seen, so
// that cost would not be transient. Hard links are one node, so they share
// an inode number and the kernel sees one inode with st_nlink names.
// Forget is a no-op: nodes live as long as the tree.
//
// Caching: the image never changes, so entries, attributes and negative
// lookups get hour-long timeouts, symlink targets are cached, listings come
// with attributes (READDIRPLUS), and the kernel is told once, by ENOSYS, that
// OPEN, OPENDIR and FLUSH are not needed: it then opens every file as if
// with FOPEN_KEEP_CACHE and every directory with FOPEN_CACHE_DIR, with no
// round trip at open(2) or close(2). An image without xattrs answers
// GETXATTR with ENOSYS too, so exec and ls -l stop asking. Once warm, a
// walk or a read of the whole tree makes no request at all.
//
// A fresh mount is another matter: each container has a mount of its own
// (it lives exactly as long as the container), so its first walk pays a
// round trip for every directory (two READDIRPLUS: the entries, then the
// empty one that ends the listing), every symlink (READLINK) and every
// file (READ, more for a large one), and on a virtual machine a round trip
// between two CPUs costs 60-140 µs (measured: 20 µs per LOOKUP with the
// server and the caller pinned to one CPU, 70-140 µs unpinned). The
// server cannot answer a listing or a symlink before it is asked, but it
// can write file contents into the page cache unasked (FUSE notify store):
// with Options.PushAhead, a reader walking the tree in order gets the next
// files pushed ahead of it, and a file read through gets its next
// megabytes pushed in growing windows (push.go). Measured on a fresh
// mount of the bench's images, `tar -cf - usr | wc -c` on the mount
// point, 3 runs each: Debian minbase (5,500 files, 116 MB) 6,552 READ
// requests and 0.85-0.93 s without pushes, 351 and 0.48-0.57 s with them;
// the large image (576 MB) 17,751 READs and 2.3-2.5 s, 1,071 and 1.0-1.4 s.
// What remains is the listings and symlinks (1,383 READDIRPLUS and 604
// READLINK for minbase) and the copying. A walk that only lists (find)
// gets nothing pushed.
//
// Inside containers (`go run ./bench --profile loopback --scenarios
// warm-start,read-find,read-tar --contenders dabba-overlay,dabba-fuse
// --peer dabba-overlay`, bench/results/2026-11-29T021216Z-fs.md, 5 runs,
// the walk timed inside the container): the first `find / -xdev` of a
// fresh container takes 158 ms on minbase and 253 ms on the large image
// against 19 and 40 ms on kernel overlayfs over the extracted layers; the
// first `tar -cf - /usr` 571 ms and 1.50 s against 171 and 534 ms. The same
// walks again in the same container: find 17 and 29 ms against 15 and 31;
// tar 170 and 439 ms against 146 and 496. The same command on 2026-12-07 at
// 1334ae1 (bench/results/2026-12-07T055607Z-fs.md, a slower and noisier
// day: overlayfs's warm start 79-93 ms against 29-31), minbase and large:
// first find 158 and 209 ms against 31 and 51; first tar 785 ms and 1.77 s
// against 248 and 668 ms; find again 33 and 44 against 30 and 49; tar
// again 249 and 753 against 170 and 671 (0.68x and 0.89x overlayfs's speed).
//
// Errors become a fuse.Status only in the FUSE methods (ops.go). A failed
// read of a layer is recorded (Options.OnError, FS.Errors) and the reader
// gets EIO; a LayerReader never hands back bytes it cannot vouch for
// (TarFiles checks a CRC-32C of each 64 KiB chunk it reads).
//
// # Reaching the bytes
//
// LayerReader is the one thing fs needs from the layers besides the tree.
// TarFiles, the local implementation, reads the uncompressed tar streams
// (OpenLayers decompresses compressed blobs into unlinked files once per
// mount: 45 ms for the Alpine minirootfs, BenchmarkOpenAlpine) with pread, checking each 64 KiB chunk against the CRC-32C taken
// when it was opened (and the whole file against its diff_id when given).
// BenchmarkTarFilesRead, 128 KiB reads from the page cache: 20 GB/s
// unchecked, 6.4 GB/s checked; either is far above what FUSE round trips
// allow. The lazy issue's readers (gzip checkpoints of layers/gzran over
// the compressed blob, ranges fetched from a registry) satisfy the same
// interface.
//
// Blobs (OpenBlobs) reads gzip blobs in place through their gzran
// checkpoints, keeping the last few inflated spans (the bytes between two
// checkpoints) in memory. With Blob.SpanDir set (dabba sets it to the
// store's inflated/<layer>/), a span inflated once is also written there,
// whole, with a CRC-32C per 64 KiB, and every later mount of the layer
// preads it instead of inflating again: a container reads what an earlier
// one read at the speed of a file in the page cache. Only spans that were
// read are kept; a damaged copy is dropped and inflated again. Measured on
// the bench's Debian minbase (1 layer, 116 MB of tar in 4 MiB spans; a
// container of `dabba run --rootfs fuse`, the machine otherwise busy):
// `tar -cf - /usr | wc -c` took 1.0 s in the first container and 0.72 s
// in the next ones; the kernel overlayfs rootfs over the extracted layer
// 0.22 s. What remains is FUSE itself on a fresh mount: the same tar over
// a fresh dabba-fs mount of the decompressed tar (TarFiles, no inflating)
// takes 0.5-0.7 s, and 0.16 s once the mount's page cache is warm. Each
// container has a mount of its own (it lives exactly as long as the
// container), so each starts with cold kernel caches.
//
// # Measurements
//
// BenchmarkAlpine (Alpine minirootfs, 518 names, 8 MB; 2 shared cores):
// once the kernel's caches are warm, walking with lstat (find) and reading
// every file (tar) through dabba-fs take as long as on the extracted tree
// or on kernel overlayfs over it (within the noise of a loaded machine:
// find 3.0 ms vs 3.5 disk and 4.4–7 overlay; read all 2.7–3.3 ms vs 2.8–8.5
// disk and 3.8–8 overlay). A fresh mount walks in 7–8 ms and reads all in
// 17–20 ms. BenchmarkMemoryPerEntry: 100,003 names mounted and walked keep
// 178 bytes per name, 170 of them the merged tree itself; 112 and 104 when
// the tree is read back from its saved form (layers.UnmarshalTree, as
// dabba run does from an image's second container on: three allocations
// instead of one per node and name).
//
// Memory touched for the first time is dear on the virtual machines this
// was measured on: a process's first write to a page costs 6-15 µs (a user
// page fault under the hypervisor; a page the kernel allocates for the
// page cache costs under 1 µs), so a READ that lands in a fresh 128 KiB
// buffer spends 300-500 µs faulting it in. go-fuse keeps its reply
// buffers in a pool per size in pages, and the kernel asks for reads of
// many sizes, so most replies of a young mount landed in fresh memory;
// the chunk checks had a buffer pool per layer and span file. Every read
// now takes its reply and its check buffer from one pool (scratch.go) and
// go-fuse writes the reply from it with writev: the first `tar -cf - /usr`
// of a container of the bench's minbase went from 647-684 ms to 597-689 ms
// (medians 676 and 637 ms, 8 alternated pairs, 2026-12-07).
//
// # Owners and user namespaces
//
// The kernel interprets the uid and gid a FUSE server reports in the user
// namespace of the process that mounted the filesystem (the connection's
// user namespace; it must also be the namespace /dev/fuse was opened in).
// So:
//
//   - Mounted inside the container's user namespace (the container's init
//     mounts, dabba-fs serves the passed descriptor with Serve): report the
//     image's ids unchanged (Options.IDs nil). Ids the namespace maps show
//     as in the image, to the container and, through the map, to the host;
//     ids it does not map show as the overflow id (65534, nobody).
//   - Mounted in the initial namespace (root, or fusermount3) for a
//     container whose map sends its 0 to host id N: report ids shifted by N
//     (Options.IDs = Shift(N, N)), so the container sees the image's ids.
//
// Requests carry the caller's ids mapped the same way; with
// default_permissions the kernel does all permission checks itself.
//
// # Serving a descriptor opened elsewhere
//
// A process that cannot run the server itself (a container's init, which
// ends in exec) opens /dev/fuse inside its namespaces, mounts it with the
// arguments KernelMountArgs gives, and passes the descriptor (SCM_RIGHTS)
// to a process that calls Serve. go-fuse supports this through its magic
// mount point /dev/fd/N (libfuse's convention): the server never mounts or
// unmounts, it reads requests from N until the kernel ends the session
// (the mount is gone, with its mount namespace or by umount). Two things
// to know: go-fuse tries DirectMount before it recognises /dev/fd/N, and
// would mount a new filesystem over /dev/fuse itself, so Serve turns it
// off; and the mounting side must pass default_permissions (KernelMountArgs
// does), or nothing checks file modes: FS leaves permission checks to the
// kernel. DeviceServer wraps Serve in the shape sandbox.FUSEServer wants;
// `dabba-fs mount --fuse-fd N` does the same in a process of its own.
//
// Kernel overlayfs accepts a dabba-fs mount as its lower layer, also
// rootless (userxattr) inside a user namespace; renaming a lower directory
// there gives EXDEV (no redirect_dir with userxattr), which mv handles.
package fs
