package runc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// runcTimeout bounds one runc invocation (they take ~50ms; a stuck one must
// not wedge the sandbox).
const runcTimeout = 60 * time.Second

// cli runs the runc binary against one --root.
type cli struct {
	bin    string // absolute path of runc
	root   string // --root
	logDir string // per-invocation JSON logs (runc's own errors)
	seq    atomic.Uint64
}

// stdio of one runc invocation; nil means /dev/null. Files are handed to
// runc (and from there to the container process) as they are.
type runcStdio struct {
	stdin          *os.File
	stdout, stderr *os.File
}

// run executes `runc --root R --log L --log-format json args...`. On failure
// the error carries runc's own message, taken from its JSON log, because
// its stderr may be the container's stderr.
func (c *cli) run(ctx context.Context, stdio runcStdio, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, runcTimeout)
	defer cancel()
	logFile := filepath.Join(c.logDir, fmt.Sprintf("runc-%d.json", c.seq.Add(1)))
	defer os.Remove(logFile)
	full := append([]string{"--root", c.root, "--log", logFile, "--log-format", "json"}, args...)
	cmd := exec.CommandContext(ctx, c.bin, full...)
	var stderr bytes.Buffer
	if stdio.stdin != nil {
		cmd.Stdin = stdio.stdin
	}
	if stdio.stdout != nil {
		cmd.Stdout = stdio.stdout
	}
	if stdio.stderr != nil {
		cmd.Stderr = stdio.stderr
	} else {
		cmd.Stderr = &stderr
	}
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		msg := lastLogError(logFile)
		if msg == "" {
			msg = strings.TrimSpace(stderr.String())
		}
		if msg == "" {
			msg = err.Error()
		}
		return &runcError{args: args, msg: msg, err: err}
	}
	return nil
}

// runcError is a failed runc invocation.
type runcError struct {
	args []string
	msg  string // runc's own message
	err  error  // the process error (exit status)
}

func (e *runcError) Error() string {
	return fmt.Sprintf("runc %s: %s", e.args[0], e.msg)
}

func (e *runcError) Unwrap() error { return e.err }

// runcMessage returns runc's own message of a runc failure, or err's text.
func runcMessage(err error) string {
	var re *runcError
	if errors.As(err, &re) {
		return re.msg
	}
	return err.Error()
}

// lastLogError returns the message of the last error-level entry of a runc
// JSON log.
func lastLogError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var msg string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			msg = e.Msg
		}
	}
	return msg
}

// exitCodeForStartError maps a failed `runc create` to the exit code a shell
// would give: 127 for a missing command, 126 for one that cannot run, 128
// for anything else.
func exitCodeForStartError(msg string) int {
	switch {
	case strings.Contains(msg, "executable file not found"),
		strings.Contains(msg, "no such file or directory"):
		return 127
	case strings.Contains(msg, "permission denied"),
		strings.Contains(msg, "exec format error"):
		return 126
	default:
		return 128
	}
}
