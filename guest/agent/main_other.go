//go:build !linux

package agent

import (
	"fmt"
	"os"
)

// Main fails: the agent is Linux's init, and nothing else.
func Main() int {
	fmt.Fprintln(os.Stderr, "cube-agent runs only as a Linux VM's init")
	return 2
}
