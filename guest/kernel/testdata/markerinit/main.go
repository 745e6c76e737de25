// Command markerinit is the boot test's /init: it prints a marker with the
// kernel release, the guest's uptime and clocksource on the console, then reboots,
// which ends QEMU (-no-reboot). Built static (CGO_ENABLED=0).
package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

func main() {
	var u syscall.Utsname
	_ = syscall.Uname(&u)
	var rel strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel.WriteByte(byte(c))
	}
	up := "?"
	if err := syscall.Mount("proc", "/proc", "proc", 0, ""); err == nil {
		if b, err := os.ReadFile("/proc/uptime"); err == nil {
			up = strings.Fields(string(b))[0]
		}
	}
	cs := "?"
	if err := syscall.Mount("sysfs", "/sys", "sysfs", 0, ""); err == nil {
		if b, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource"); err == nil {
			cs = strings.TrimSpace(string(b))
		}
	}
	fmt.Printf("CUBE-BOOT-MARKER release=%s uptime=%s clocksource=%s\n", rel.String(), up, cs)
	syscall.Sync()
	_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
	select {}
}
