// Package images builds the benchmark's images from real content and keeps
// them in a cache between runs, keyed by their recipe and content:
//
//   - alpine: the Alpine minirootfs of ../shared/images (checked against its
//     .sha512), one layer;
//   - minbase: a Debian bookworm minbase made by debootstrap, one layer;
//   - large: the same minbase plus python3, gcc, g++ and their libraries,
//     installed with apt-get in a chroot, in four layers computed as diffs
//     of directory trees (TreeDiff): the upper ones replace files of the lower
//     (dpkg's status, ld.so.cache) and delete them (the apt lists and .deb
//     files kept by the layers below, documentation), with whiteouts and an
//     opaque directory, as real images built by a Dockerfile do.
//
// Each image comes in a form: plain gzip now; eStargz and gzip plus a dabba
// index are the lazy issue's and are refused with a message until then.
package images
