// Package testenv is the shared ground of dabba's integration tests: the
// unprivileged test user (created by `make deps`), the real binaries built
// once per test process, temporary directories that user may write, real
// registries on loopback (in-process and Debian's docker-registry), and real
// images (the Alpine minirootfs of ../shared/images, Debian's static busybox).
//
// A missing prerequisite skips the test with a message saying how to install
// it, except under CI (CI=true), where every test must run, so it fails.
package testenv
