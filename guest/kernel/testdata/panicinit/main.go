// Command panicinit is TestGuestPanicEndsVM's /init: it prints a marker
// and exits, and PID 1 exiting panics the kernel.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("CUBE-BOOT-MARKER about to exit")
	os.Exit(3)
}
