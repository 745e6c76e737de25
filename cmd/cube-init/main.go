// Command cube-init is a container's init in a Cube microVM (see
// guest/cinit): the guest agent starts it as each container's PID 1.
// Build it static: CGO_ENABLED=0.
package main

import (
	"os"

	"github.com/cube-platform/cube/guest/cinit"
)

func main() { os.Exit(cinit.Main()) }
