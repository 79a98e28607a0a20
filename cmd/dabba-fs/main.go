// Command dabba-fs serves an image's merged layers over FUSE, on its own,
// without the runtime.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "dabba-fs: not built yet")
	os.Exit(2)
}
