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
// runs) in their forms: plain gzip, gzip with a dabba lazy index pushed
// beside it, and eStargz. Before the link is shaped, one unmeasured
// learning run of each image's cold command (`dabba run
// --lazy=nobackground` in a throwaway store) records the files it reads;
// the gzip+index image's index is pushed again with them as its prefetch
// list, and the eStargz form is converted with them before each layer's
// prefetch landmark, as `ctr-remote image optimize` does. By default the
// lazy contenders run on those two forms and the others on gzip. The
// contenders run as the unprivileged test user (rootless), each
// described declaratively by the command lines that pull, run and prepare
// (contenders.go), and measured identically: wall time from exec to exit,
// and the peak RSS of the process tree from wait4. Contenders are alternated
// run by run so a noisy machine shifts them all alike; results are reported
// as ratios to podman (package report).
//
// Scenarios: cold pull (empty store); cold pull-to-shell (empty store, until
// a command that touches the image has finished); warm start (/bin/true,
// image local); read-heavy (find and tar over the image inside the
// container, each walk done twice and also timed inside the container by
// mark lines the command prints: the -1st and -2nd rows). A contender or mode that fails is a failed row with its error.
package main
