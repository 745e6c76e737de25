// Command cube-agent is the guest agent: PID 1 of a Cube microVM's
// initramfs (see guest/agent). Build it static: CGO_ENABLED=0.
package main

import (
	"os"

	"github.com/cube-platform/cube/guest/agent"
)

func main() { os.Exit(agent.Main()) }
