package imagetest

import (
	"os/exec"
	"syscall"
)

// dieWithParent kills the child if the test binary dies without cleanup.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
