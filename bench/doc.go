// Command bench is dabba's benchmark harness: `go run ./bench` (as root; or
// `make bench`) measures dabba's modes side by side with podman, skopeo and
// runc in one run, and writes a table, its JSON and a plot to bench/results.
//
// It sets up everything itself and removes it on exit, also on Ctrl-C: a
// tmpfs holding every contender's store and the registry's storage, a
// registry (Debian's docker-registry, or go-containerregistry's in-process
// one), an emulated link (package link: tbf on a veth into a network
// namespace for the rate, a delaying proxy for the round trip, which also
// counts the bytes fetched) and the images (package images, cached between
// runs). The contenders run as the unprivileged test user (rootless), each
// described declaratively by the command lines that pull, run and prepare
// (contenders.go), and measured identically: wall time from exec to exit,
// and the peak RSS of the process tree from wait4. Contenders are alternated
// run by run so a noisy machine shifts them all alike; results are reported
// as ratios to podman (package report).
//
// Scenarios: cold pull (empty store); cold pull-to-shell (empty store, until
// a command that touches the image has finished); warm start (/bin/true,
// image local); read-heavy (find and tar over the image inside the
// container). A contender or mode that fails is a failed row with its error.
package main
