// Command demoregistry serves a registry on loopback holding an image made
// from Debian's static busybox, for `make demo`: it needs no internet. It
// prints "READY <host:port>" once the image is pushed, then serves until it
// is stopped with SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dabba/dabba/internal/imagebuild"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on (loopback)")
	repo := flag.String("repo", "demo/busybox:latest", "repository and tag of the image")
	flag.Parse()

	bb, err := imagebuild.BusyboxPath()
	if err != nil {
		fail(err)
	}
	img, err := imagebuild.Busybox(bb, imagebuild.DefaultConfig())
	if err != nil {
		fail(err)
	}
	reg, err := imagebuild.StartRegistry(*addr)
	if err != nil {
		fail(err)
	}
	defer reg.Close()
	if err := imagebuild.Push(img, reg.Host+"/"+*repo); err != nil {
		fail(err)
	}
	fmt.Printf("READY %s\n", reg.Host)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "demoregistry: %v\n", err)
	os.Exit(1)
}
