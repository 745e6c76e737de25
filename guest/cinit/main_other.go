//go:build !linux

package cinit

import (
	"fmt"
	"os"
)

// Main fails: a container init runs only in a Linux guest.
func Main() int {
	fmt.Fprintln(os.Stderr, "cube-init runs only as a container's init in a Linux VM")
	return 2
}
