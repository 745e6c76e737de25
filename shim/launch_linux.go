package shim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// Launch starts a shim for cfg and returns a client once it answers. argv
// is the shim command without the config path, which Launch appends, e.g.
// ["/usr/bin/cube", "shim", "--config"]. If a shim already answers on
// cfg.Socket, Launch returns a client to it and starts nothing. The shim
// says when it serves through a pipe (see signalReady), so Launch does not
// poll the socket.
//
// The shim runs in its own session (no controlling terminal, its own
// process group), with stdin /dev/null and stdout/stderr appended to the
// log file beside the socket, so that nothing done to the caller (kill -9
// included) reaches it. While the caller lives, a goroutine waits for the
// shim so it never lingers as a zombie; if the caller dies first, the shim
// is reparented and lives on.
func Launch(ctx context.Context, argv []string, cfg Config) (*Client, error) {
	if len(argv) == 0 {
		return nil, errors.New("shim launch: empty command")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := Dial(cfg.Socket)
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	err := c.Ping(pctx)
	cancel()
	if err == nil {
		return c, nil
	}
	if len(cfg.ExtraFiles) == 0 {
		// A saved config names an fd of the shim that had it; this one
		// gets none (a template's memory is handed over afresh).
		cfg.VM.TemplateDir, cfg.VM.TemplateMemFD = "", 0
	}
	files := FilesFor(cfg.Socket)
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o700); err != nil {
		return nil, fmt.Errorf("shim launch: %w", err)
	}
	if err := writeConfig(files.Config, cfg); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(files.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shim launch: log file: %w", err)
	}
	defer logf.Close()
	logStart, _ := logf.Seek(0, 2)
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("shim launch: %w", err)
	}
	defer readyR.Close()
	cmd := exec.Command(argv[0], slices.Concat(argv[1:], []string{files.Config})...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.ExtraFiles = append([]*os.File{readyW}, cfg.ExtraFiles...) // fd 3, then FirstExtraFD..
	cmd.Env = append(os.Environ(), envReadyFD+"=3")
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return nil, fmt.Errorf("shim launch: start %s: %w", argv[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// The shim writes a byte once it serves; the read also ends when the
	// shim exits, or when Launch returns and closes readyR.
	ready := make(chan struct{})
	go func() {
		var b [1]byte
		if n, _ := readyR.Read(b[:]); n == 1 {
			close(ready)
		}
	}()

	// Polling is only the fallback for a shim command that does not
	// signal readiness.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ready:
			ready = nil // from now on, poll
		case <-tick.C:
		case werr := <-exited:
			// Another shim may have won a race for the same socket.
			if c.Ping(ctx) == nil {
				return c, nil
			}
			return nil, fmt.Errorf("shim launch: shim exited before serving (%v); its log says: %s", werr, logTail(files.Log, logStart))
		case <-ctx.Done():
			cmd.Process.Kill()
			return nil, fmt.Errorf("shim launch: no answer on %s: %w; its log says: %s", cfg.Socket, ctx.Err(), logTail(files.Log, logStart))
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Ping(pctx)
		cancel()
		if err == nil {
			return c, nil
		}
	}
}

// envReadyFD names the file descriptor on which Launch waits for the shim
// to say it serves (see signalReady).
const envReadyFD = "CUBE_SHIM_READY_FD"

// FirstExtraFD is the shim's fd of Config.ExtraFiles[0].
const FirstExtraFD = 4

// signalReady writes one byte to the descriptor named by envReadyFD and
// closes it, so Launch need not poll the socket. Nothing the shim starts
// later (runc, containers) inherits the descriptor or the variable.
func signalReady() {
	v := os.Getenv(envReadyFD)
	os.Unsetenv(envReadyFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	f.Write([]byte{1})
	f.Close()
}

// logTail returns the end of what the shim logged since offset.
func logTail(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return "(no log)"
	}
	b = bytes.TrimSpace(b[offset:])
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return string(b)
}
