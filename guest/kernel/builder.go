package kernel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cube-platform/cube/errdefs"
)

// Phase is where a kernel build stands.
type Phase string

const (
	PhaseIdle    Phase = "idle"    // not started
	PhaseWaiting Phase = "waiting" // another process holds the build lock
	PhaseUnpack  Phase = "unpack"  // unpacking the source tarball
	PhaseConfig  Phase = "config"  // tinyconfig + fragment, checked
	PhaseCompile Phase = "compile" // make vmlinux
	PhaseInstall Phase = "install" // copying into the cache
	PhaseDone    Phase = "done"    // Status.Path is the vmlinux
	PhaseFailed  Phase = "failed"  // Status.Err says why
)

// Status is a snapshot of a build.
type Status struct {
	// Phase is the current phase.
	Phase Phase
	// Percent estimates the progress of the whole build, 0-100; it is 100
	// only in PhaseDone.
	Percent int
	// Step is the last thing the build did ("CC kernel/fork.o").
	Step string
	// Path is the vmlinux once Phase is PhaseDone.
	Path string
	// Err is set in PhaseFailed.
	Err error
}

// BuilderConfig configures a Builder.
type BuilderConfig struct {
	// CacheDir is the cache root; the kernel goes to CacheDir/kernel/<hash>.
	CacheDir string
	// Logger receives the build's output line by line and its phases.
	Logger *slog.Logger
	// Jobs is make's -j; 0 means the number of CPUs.
	Jobs int
}

// DefaultBuilderConfig returns the defaults: DefaultCacheDir, no logging,
// one job per CPU.
func DefaultBuilderConfig() BuilderConfig {
	return BuilderConfig{CacheDir: DefaultCacheDir, Logger: slog.New(slog.DiscardHandler)}
}

// Validate reports a config the builder cannot run with.
func (c BuilderConfig) Validate() error {
	if c.CacheDir == "" || !filepath.IsAbs(c.CacheDir) {
		return fmt.Errorf("kernel builder: cache dir %q must be an absolute path: %w", c.CacheDir, errdefs.ErrInvalid)
	}
	if c.Jobs < 0 {
		return fmt.Errorf("kernel builder: jobs %d must not be negative: %w", c.Jobs, errdefs.ErrInvalid)
	}
	return nil
}

// Builder builds the kernel in the background, once. Builders in any
// number of processes on one cache dir build it at most once at a time:
// they take an flock on CacheDir/kernel/.lock, and the ones that wait
// find the finished kernel when they get the lock.
type Builder struct {
	cfg  BuilderConfig
	log  *slog.Logger
	done chan struct{}
	once sync.Once

	// fakeScript, when set by a test, runs instead of the embedded
	// build.sh: a real kernel build takes minutes, and the locking,
	// progress and cleanup around it are what those tests check.
	fakeScript []byte

	mu sync.Mutex
	// st is the current status. Protected by mu.
	st Status
	// ccLines counts compile steps seen. Protected by mu.
	ccLines int
}

// NewBuilder returns a builder; Start runs it.
func NewBuilder(cfg BuilderConfig) *Builder {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Builder{
		cfg:  cfg,
		log:  cfg.Logger.With("component", "kernel-builder"),
		done: make(chan struct{}),
		st:   Status{Phase: PhaseIdle},
	}
}

// Start begins the build in the background and returns at once; only the
// first call does anything. Cancelling ctx stops the build (the make
// processes are killed and the temp dir removed); Done is closed when the
// builder has finished, whatever the outcome.
func (b *Builder) Start(ctx context.Context) {
	b.once.Do(func() {
		go func() {
			defer close(b.done)
			path, err := b.run(ctx)
			b.mu.Lock()
			defer b.mu.Unlock()
			if err != nil {
				b.st.Phase, b.st.Err = PhaseFailed, err
				b.log.Error("guest kernel build failed", "err", err)
				return
			}
			b.st = Status{Phase: PhaseDone, Percent: 100, Path: path, Step: b.st.Step}
		}()
	})
}

// Done is closed when the build has finished or failed.
func (b *Builder) Done() <-chan struct{} { return b.done }

// Status returns the build's current status.
func (b *Builder) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

func (b *Builder) setPhase(p Phase) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.Phase = p
	b.st.Percent = percent(p, b.ccLines)
}

func (b *Builder) run(ctx context.Context) (string, error) {
	if err := b.cfg.Validate(); err != nil {
		return "", err
	}
	if p, ok := Find(b.cfg.CacheDir); ok {
		return p, nil
	}
	kdir := filepath.Join(b.cfg.CacheDir, "kernel")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return "", fmt.Errorf("kernel build: %w", err)
	}
	unlock, err := b.lock(ctx, filepath.Join(kdir, ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	// Whoever held the lock before may have built it.
	if p, ok := Find(b.cfg.CacheDir); ok {
		b.log.Info("guest kernel built by another process", "path", p)
		return p, nil
	}
	// Holding the lock, no build is under way here: whatever a killed
	// build left behind goes.
	removeStale(kdir, b.log)
	start := time.Now()
	b.log.Info("building guest kernel", "hash", Hash(), "dir", Dir(b.cfg.CacheDir))
	err = b.runScript(ctx, kdir)
	// The script removes its work dir itself, but not when it is killed.
	removeStale(kdir, b.log)
	if err != nil {
		return "", err
	}
	p, ok := Find(b.cfg.CacheDir)
	if !ok {
		return "", fmt.Errorf("kernel build finished but %s is missing or incomplete: %w", Dir(b.cfg.CacheDir), errdefs.ErrUnavailable)
	}
	b.log.Info("guest kernel built", "path", p, "duration", time.Since(start).Round(time.Second))
	return p, nil
}

// removeStale deletes the work and staging dirs of earlier builds.
// Preconditions: the build lock is held.
func removeStale(kdir string, log *slog.Logger) {
	for _, pat := range []string{".build-*", ".script-*"} {
		m, _ := filepath.Glob(filepath.Join(kdir, pat))
		for _, d := range m {
			if err := os.RemoveAll(d); err != nil {
				log.Warn("cannot remove an old kernel build dir", "dir", d, "err", err)
			}
		}
	}
}

// tailLines is how many of the script's last stderr lines an error carries.
const tailLines = 15

// maxLine bounds one line of build output kept or logged.
const maxLine = 4096

func (b *Builder) runScript(ctx context.Context, kdir string) error {
	sdir, err := os.MkdirTemp(kdir, ".script-")
	if err != nil {
		return fmt.Errorf("kernel build: %w", err)
	}
	defer os.RemoveAll(sdir)
	script := buildScript
	if b.fakeScript != nil {
		script = b.fakeScript
	}
	spath := filepath.Join(sdir, "build.sh")
	fpath := filepath.Join(sdir, "config.fragment")
	if err := os.WriteFile(spath, script, 0o755); err != nil {
		return fmt.Errorf("kernel build: %w", err)
	}
	if err := os.WriteFile(fpath, fragment, 0o644); err != nil {
		return fmt.Errorf("kernel build: %w", err)
	}
	jobs := b.cfg.Jobs
	if jobs == 0 {
		jobs = runtime.NumCPU()
	}
	// Niced: cube up builds in the background on a node that is already
	// running instances, which must not starve for minutes.
	cmd := exec.CommandContext(ctx, "nice", "-n", "10", "/bin/bash", spath)
	cmd.Env = append(os.Environ(),
		"CACHE="+b.cfg.CacheDir,
		"FRAGMENT="+fpath,
		"JOBS="+strconv.Itoa(jobs),
		"CUBE_KERNEL_LOCKED=1",
		"CUBE_KERNEL_HASH="+Hash(),
	)
	setProcessGroup(cmd)
	cmd.WaitDelay = 10 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("kernel build: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("kernel build: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("kernel build: start build.sh: %w", err)
	}
	var wg sync.WaitGroup
	var tail []string
	wg.Add(2)
	go func() { defer wg.Done(); b.consume(stdout, false, nil) }()
	go func() { defer wg.Done(); b.consume(stderr, true, &tail) }()
	wg.Wait()
	err = cmd.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("kernel build cancelled: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("kernel build failed (%v); last output:\n%s", err, strings.Join(tail, "\n"))
	}
	return nil
}

// consume reads the script's output line by line into the log and the
// progress; stderr's last lines are kept in tail for the error.
func (b *Builder) consume(r io.Reader, isErr bool, tail *[]string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if len(line) > maxLine {
			line = line[:maxLine]
		}
		b.observe(line)
		if isErr {
			b.log.Info("kernel build", "stderr", line)
			*tail = append(*tail, line)
			if len(*tail) > tailLines {
				*tail = (*tail)[1:]
			}
		} else if strings.HasPrefix(line, scriptPrefix) {
			b.log.Info("kernel build", "out", line)
		} else {
			b.log.Debug("kernel build", "out", line)
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, os.ErrClosed) {
		b.log.Warn("kernel build output", "err", err)
	}
}

func (b *Builder) observe(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, n := parseProgress(b.st, b.ccLines, line)
	b.st, b.ccLines = st, n
}
