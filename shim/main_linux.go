package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	containerdlog "github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm"
	"github.com/cube-platform/cube/sandbox/runc"
)

// Backends are the sandbox backends a shim can run, by Config.Backend.
var Backends = sandbox.Backends{
	sandbox.BackendRunc:    runc.Factory,
	sandbox.BackendMicroVM: microvm.Factory,
}

// Main is the body of `cube shim --config PATH`. It serves until an
// explicit /shutdown, SIGTERM or SIGINT (for operators), or cancellation of
// ctx: each of these stops the containers, destroys the sandbox and
// removes the shim's files before Main returns. Nothing else ends it: it
// ignores SIGHUP and SIGPIPE, and the death of the process that launched it
// means nothing to it.
//
// Start-up order: read config, become child subreaper, lock the pid file,
// listen, build the sandbox, serve, tell Launch it serves, then create the
// sandbox and start the containers (after Client.Start, with
// Config.AwaitStart) in the background.
func Main(ctx context.Context, configPath string) error {
	tuneGC()
	cfg, err := LoadConfig(configPath)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.WithDefaults()
	p, err := prepare(cfg.Debug, cfg.Sandbox.ID)
	if err != nil {
		return err
	}
	defer p.stop()
	if cfg.Warm != nil {
		return warmMain(ctx, cfg, p)
	}
	files := FilesFor(cfg.Socket)
	unlock, err := lockPidFile(files.Pid)
	if err != nil {
		return err
	}
	defer unlock()
	ln, err := listen(cfg.Socket)
	if err != nil {
		os.Remove(files.Pid)
		return err
	}
	sb, err := Backends.New(cfg.Backend, cfg.Sandbox, sandbox.Options{Logger: p.base, Runc: cfg.Runtime, VM: cfg.VM})
	if err != nil {
		ln.Close() // unlinks the socket
		os.Remove(files.Pid)
		return err
	}
	return serve(ctx, cfg, sb, ln, p, signalReady)
}

// process is what a shim process sets up before it serves anything.
type process struct {
	base  *slog.Logger
	level *slog.LevelVar
	log   *slog.Logger
	sigs  chan os.Signal
	stop  func()
}

// prepare sets up the shim process: its log, child subreaping, and its
// signals.
func prepare(debug bool, id string) (*process, error) {
	level := new(slog.LevelVar) // info; an adopted warm shim takes its instance's
	if debug {
		level.Set(slog.LevelDebug)
	}
	base := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// ttRPC logs through logrus, a line per frame a guest sends on an
	// unknown stream: a hostile guest would fill the shim's log. The
	// agent client reports what matters as errors.
	containerdlog.L.Logger.SetOutput(io.Discard)
	log := base.With("component", "shim")
	if id != "" {
		log = log.With("sandbox", id)
	}

	// Container processes are reparented to us when runc exits; only as a
	// subreaper can we reap them and read their exit status.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("shim: become child subreaper: %w", err)
	}
	// Ignore SIGHUP and SIGPIPE by catching and dropping them, not with
	// signal.Ignore: SIG_IGN would be inherited through exec by runc and,
	// unless runc resets it, by the containers.
	ignored := make(chan os.Signal, 4)
	signal.Notify(ignored, unix.SIGHUP, unix.SIGPIPE)
	go func() {
		for range ignored {
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	return &process{base: base, level: level, log: log, sigs: sigs, stop: func() {
		signal.Stop(sigs)
		signal.Stop(ignored) // no more sends after Stop returns
		close(ignored)
	}}, nil
}

// serve supervises sb for cfg on ln until the shim is done: it serves,
// calls served (Launch's signal), creates the sandbox and starts its
// containers in the background, and returns after an explicit shutdown,
// a signal's or ctx's.
func serve(ctx context.Context, cfg Config, sb sandbox.Sandbox, ln net.Listener, p *process, served func()) error {
	log := p.base.With("component", "shim", "sandbox", cfg.Sandbox.ID)
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	s, err := newSupervisor(life, cfg, sb, log)
	if err != nil {
		ln.Close() // unlinks the socket
		os.Remove(FilesFor(cfg.Socket).Pid)
		return err
	}
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	served()
	go s.boot()
	log.Info("shim serving", "socket", cfg.Socket, "pid", os.Getpid())

	for done := false; !done; {
		select {
		case <-s.exited:
			done = true
		case sig := <-p.sigs:
			log.Info("signal: shutting down", "signal", sig.String())
			done = shutdownOrLog(s, log)
		case <-ctx.Done():
			log.Info("context done: shutting down")
			done = shutdownOrLog(s, log)
			ctx = context.Background() // try once; then wait for /shutdown or a signal
		case err := <-serveErr:
			return fmt.Errorf("shim: serve %s: %w", cfg.Socket, err)
		}
	}
	// Let in-flight responses (the /shutdown one above all) finish.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	return nil
}

// shimGCPercent is the shim's GOGC. A shim lives as long as its instance
// with about 1 MiB of live heap, and allocates little once the instance
// runs (a state poll, a log line): at Go's default of 100 its heap grows
// to the 4 MiB floor before the first collection and stays there, 1.4 MiB
// more RSS in every shim (go test -bench ShimRSS ./shim/). At 50 the floor
// is 2 MiB; the price is a few more collections of a 1 MiB heap while the
// sandbox boots (5 MiB allocated in all), and no work at all when idle.
// Lower bought almost nothing more (25: 0.05 MiB).
const shimGCPercent = 50

// tuneGC sets shimGCPercent unless the operator set GOGC.
func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(shimGCPercent)
	}
}

func shutdownOrLog(s *supervisor, log *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StopGrace+time.Minute)
	defer cancel()
	if err := s.shutdown(ctx, s.cfg.StopGrace); err != nil {
		log.Error("shutdown failed; still serving so it can be retried", "err", err)
		return false
	}
	return true
}

// lockPidFile takes an exclusive lock on the pid file for the life of the
// shim, so two shims can never serve one socket, and writes our pid in it.
func lockPidFile(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("shim: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shim: pid file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("shim: another shim holds %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("shim: pid file: %w", err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("shim: pid file: %w", err)
	}
	return func() { f.Close() }, nil
}

// listen binds the socket, replacing a stale one (we hold the pid lock, so
// no live shim serves it).
func listen(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("shim: remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("shim: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("shim: %w", err)
	}
	return ln, nil
}
