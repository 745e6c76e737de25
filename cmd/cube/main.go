// Command cube is the whole of Cube in one binary: server, node agent,
// shim and CLI.
package main

import (
	"os"

	"github.com/cube-platform/cube/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
