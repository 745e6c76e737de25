// Command testinit is a throwaway guest /init for the QEMU driver's tests
// (until the guest agent exists): it prints a marker on the console, then
// does what the kernel command line's cubemode= says (the kernel hands
// unknown key=value parameters to init as environment variables).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	syscall.Mount("proc", "/proc", "proc", 0, "")
	up, _ := os.ReadFile("/proc/uptime")
	mode := os.Getenv("cubemode")
	mem, _ := os.ReadFile("/proc/meminfo")
	memTotal := strings.Join(strings.Fields(strings.SplitN(string(mem)+"\n", "\n", 2)[0]), "")
	fmt.Printf("CUBE-TEST-INIT-OK mode=%s uptime=%s cpus=%d %s\n", mode, strings.Fields(string(up) + " ?")[0], runtime.NumCPU(), memTotal)
	switch mode {
	case "hang":
		for {
			time.Sleep(time.Hour)
		}
	case "tick":
		// A counter on the console, so a restored snapshot shows it goes
		// on from where it was.
		for i := 0; ; i++ {
			fmt.Printf("CUBE-TICK %d\n", i)
			time.Sleep(20 * time.Millisecond)
		}
	case "drives":
		drives()
	case "devices":
		devices()
		syscall.Sync()
		syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
	case "flood":
		// A hostile guest: far more console output than the host keeps.
		line := []byte(strings.Repeat("x", 1023) + "\n")
		for i := 0; i < 512; i++ {
			os.Stdout.Write(line)
		}
		fmt.Println("CUBE-FLOOD-DONE")
		for {
			time.Sleep(time.Hour)
		}
	case "panic":
		// PID 1 exiting panics the kernel ("Attempted to kill init").
		os.Exit(3)
	case "touch":
		// Touch N MiB so the host can tell guest memory from VMM overhead.
		n, _ := strconv.Atoi(os.Getenv("cubemib"))
		b := make([]byte, n<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		fmt.Printf("CUBE-TEST-TOUCHED %d\n", n)
		for {
			time.Sleep(time.Hour)
			b[0]++
		}
	default:
		syscall.Sync()
		syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
	}
}
