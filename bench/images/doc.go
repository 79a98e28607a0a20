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
// Each image comes in a form: plain gzip (FormGzip); the same image with a
// dabba lazy index the harness pushes beside it (FormGzipIndex: the layers
// are the gzip form's); and eStargz (FormEStargz), converted layer by layer
// from the gzip form with stargz-snapshotter's estargz package by
// BuildEStargz, with the layer annotations stargz-snapshotter sets (the TOC
// digest, the uncompressed size) and, given the files a run read first
// (dabba's learned list), those files before each layer's prefetch
// landmark, as `ctr-remote image optimize` does. Conversions are cached
// keyed by the gzip form and the list.
package images
