// Command cube-shim is the per-instance supervisor the node agent starts:
// `cube-shim --config PATH`. It is `cube shim` without the rest of Cube,
// so it starts in a few milliseconds instead of running the package
// initialisation of the server, etcd and the CLI; it imports only shim
// (and through it sandbox). `cube shim` runs the same code.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/cube-platform/cube/shim"
)

func main() {
	fs := flag.NewFlagSet("cube-shim", flag.ContinueOnError)
	config := fs.String("config", "", "shim config file written by the node agent")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *config == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: cube-shim --config PATH (started by the node agent)")
		os.Exit(2)
	}
	if err := shim.Main(context.Background(), *config); err != nil {
		fmt.Fprintln(os.Stderr, "cube-shim:", err)
		os.Exit(1)
	}
}
