// Package imagebuild makes real OCI images from real content, for the demo,
// the benchmark harness and the tests: an image from a root filesystem
// tarball (such as the Alpine minirootfs), an image from Debian's static
// busybox, and images from layer tarballs built in code. It also serves an
// in-process registry (go-containerregistry's pkg/registry) on loopback.
package imagebuild
