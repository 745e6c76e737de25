package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm"
)

// A warm shim holds one warm VM (microvm.Warm: a template's clone,
// restored and rehearsed ahead) for no instance yet. The node launches
// it like any shim, with Config.Warm set and its own socket; when an
// instance of the VM's size is created, Adopt hands the warm shim the
// instance's Config, and the shim becomes that instance's shim: it takes
// the instance's pid file and socket, writes its config there, and
// supervises the sandbox, which adopts the warm VM instead of restoring
// one. A shim, not the node, holds the warm VM, so that once adopted the
// VM's parent is the instance's shim, which outlives the node as every
// shim does.
//
// The warm shim's API, on its own socket until it is adopted:
//
//	GET  /ping      200 {"pid":N}
//	POST /adopt     body Config: 200 {"pid":N} once it serves on Config.Socket
//	POST /shutdown  200; the warm VM is stopped and the shim exits
const (
	// AdoptedFile, beside an adopted warm shim's socket, names the
	// instance's socket: the warm VM's files there are the instance's.
	AdoptedFile = "adopted"
	// maxAdoptBody bounds an adoption's config.
	maxAdoptBody = 1 << 20
	// warmVMDir is where, beside its socket, a warm shim keeps its VM.
	warmVMDir = "warm-vm"
)

type warmShim struct {
	cfg Config
	p   *process
	w   *microvm.WarmVM

	mu sync.Mutex
	// taken is set once an adoption began (one only); protected by mu.
	taken bool
	// adopted receives the instance's config, listener and sandbox.
	adopted chan warmAdoption
	quit    chan struct{}
}

type warmAdoption struct {
	cfg Config
	sb  sandbox.Sandbox
	ln  net.Listener
	// unlock releases the instance's pid file.
	unlock func()
	// served is closed once the instance's server runs.
	served chan struct{}
}

// warmMain is Main for a warm shim.
func warmMain(ctx context.Context, cfg Config, p *process) error {
	files := FilesFor(cfg.Socket)
	unlock, err := lockPidFile(files.Pid)
	if err != nil {
		return err
	}
	defer unlock()
	removeFiles := func() {
		os.Remove(files.Pid)
		os.Remove(files.Config)
	}
	w, err := warmUp(ctx, cfg, p)
	if err != nil {
		removeFiles()
		return err
	}
	ln, err := listen(cfg.Socket)
	if err != nil {
		w.Close(context.Background())
		removeFiles()
		return err
	}
	ws := &warmShim{cfg: cfg, p: p, w: w, adopted: make(chan warmAdoption, 1), quit: make(chan struct{})}
	srv := &http.Server{Handler: ws.handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	signalReady()
	p.log.Info("warm shim serving", "socket", cfg.Socket, "pid", os.Getpid(), "rehearsal", w.Rehearsal)

	stopWarm := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		err := w.Close(sctx)
		removeFiles()
		return err
	}
	select {
	case a := <-ws.adopted:
		// Marked first: whoever sweeps the warm shims' dirs leaves this
		// one's VM files to the instance that owns them now.
		if err := os.WriteFile(filepath.Join(filepath.Dir(cfg.Socket), AdoptedFile), []byte(a.cfg.Socket), 0o600); err != nil {
			p.log.Warn("mark the warm dir adopted", "err", err)
		}
		// The warm shim's own files go; from now on this process is the
		// instance's shim, and its log the instance's. The adoption's
		// request is still in flight: it is answered once the instance's
		// socket serves.
		ln.Close() // unlinks the socket
		removeFiles()
		os.Remove(files.Log)
		if a.cfg.Debug {
			p.level.Set(slog.LevelDebug)
		}
		defer a.unlock()
		return serve(ctx, a.cfg, a.sb, a.ln, p, func() { close(a.served) })
	case <-ws.quit:
		return stopWarm()
	case sig := <-p.sigs:
		p.log.Info("signal: stopping the warm vm", "signal", sig.String())
		return stopWarm()
	case <-ctx.Done():
		return stopWarm()
	}
}

// WarmName is the name of the warm VM of the warm shim serving socket
// (its jail uid's, until adopted): its dir's.
func WarmName(socket string) string { return filepath.Base(filepath.Dir(socket)) }

// warmUp opens the template cfg names and warms a clone of it.
func warmUp(ctx context.Context, cfg Config, p *process) (*microvm.WarmVM, error) {
	t, err := microvm.OpenTemplateFD(cfg.VM, cfg.Warm.VCPUs, cfg.Warm.MemoryMiB)
	if err != nil {
		return nil, fmt.Errorf("warm shim: %w", err)
	}
	// The clone maps the memory; the shim needs no descriptor of it.
	defer t.Close()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return microvm.Warm(wctx, cfg.VM, t, microvm.WarmOptions{
		Dir:          filepath.Join(filepath.Dir(cfg.Socket), warmVMDir),
		CgroupParent: cfg.Warm.CgroupParent, Program: cfg.Warm.Program, Name: WarmName(cfg.Socket), Log: p.base})
}

func (ws *warmShim) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]int{"pid": os.Getpid()})
	})
	mux.HandleFunc("POST /adopt", ws.handleAdopt)
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) {
		ws.mu.Lock()
		taken := ws.taken
		ws.taken = true
		ws.mu.Unlock()
		if taken {
			writeError(w, http.StatusConflict, errors.New("the warm vm is being adopted"))
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
		close(ws.quit)
	})
	return mux
}

// handleAdopt makes this shim the instance's: it checks the config,
// takes the instance's pid file and socket, and hands the sandbox (which
// adopts the warm VM at Create) to warmMain. An adoption that fails
// before the instance's socket serves leaves the warm VM as it was.
func (ws *warmShim) handleAdopt(w http.ResponseWriter, r *http.Request) {
	var cfg Config
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdoptBody)).Decode(&cfg); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("adopt: %w", err))
		return
	}
	if cfg.Warm != nil || cfg.Backend != sandbox.BackendMicroVM {
		writeError(w, http.StatusBadRequest, errors.New("adopt: the config must be a microvm instance's"))
		return
	}
	if err := cfg.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("adopt: %w", err))
		return
	}
	cfg = cfg.WithDefaults()
	// Its memory is mapped already; a later shim of the instance gets
	// the template afresh from the node.
	cfg.VM.TemplateDir, cfg.VM.TemplateMemFD = "", 0
	ws.mu.Lock()
	if ws.taken {
		ws.mu.Unlock()
		writeError(w, http.StatusConflict, errors.New("adopt: the warm vm is taken"))
		return
	}
	ws.taken = true
	ws.mu.Unlock()
	a, err := ws.prepare(cfg)
	if err != nil {
		ws.mu.Lock()
		ws.taken = false
		ws.mu.Unlock()
		code := http.StatusInternalServerError
		if errors.Is(err, errdefs.ErrInvalid) {
			code = http.StatusBadRequest
		}
		writeError(w, code, fmt.Errorf("adopt: %w", err))
		return
	}
	ws.adopted <- a
	select {
	case <-a.served:
		writeJSON(w, http.StatusOK, map[string]int{"pid": os.Getpid()})
	case <-r.Context().Done():
	}
}

// prepare takes the instance's files and builds its sandbox with the
// warm VM.
func (ws *warmShim) prepare(cfg Config) (_ warmAdoption, err error) {
	files := FilesFor(cfg.Socket)
	unlock, err := lockPidFile(files.Pid)
	if err != nil {
		return warmAdoption{}, err
	}
	defer func() {
		if err != nil {
			unlock()
			os.Remove(files.Pid)
		}
	}()
	if err := writeConfig(files.Config, cfg); err != nil {
		return warmAdoption{}, err
	}
	logf, err := os.OpenFile(files.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return warmAdoption{}, err
	}
	defer logf.Close()
	sb, err := Backends.New(cfg.Backend, cfg.Sandbox, sandbox.Options{Logger: ws.p.base, Runc: cfg.Runtime, VM: cfg.VM})
	if err != nil {
		return warmAdoption{}, fmt.Errorf("%w: %w", errdefs.ErrInvalid, err)
	}
	ln, err := listen(cfg.Socket)
	if err != nil {
		return warmAdoption{}, err
	}
	if err := microvm.UseWarm(sb, ws.w); err != nil {
		ln.Close()
		return warmAdoption{}, err
	}
	// The instance's shim log from here on (stdout and stderr are the
	// log's, as Launch gives a shim).
	for _, fd := range []int{1, 2} {
		unix.Dup2(int(logf.Fd()), fd)
	}
	return warmAdoption{cfg: cfg, sb: sb, ln: ln, unlock: unlock, served: make(chan struct{})}, nil
}

// Adopt hands cfg, an instance's config, to the warm shim serving on
// warmSocket, which becomes the instance's shim, and returns a client of
// it on cfg.Socket. cfg.ExtraFiles are not passed (the warm VM's memory
// is mapped already).
func Adopt(ctx context.Context, warmSocket string, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o700); err != nil {
		return nil, fmt.Errorf("shim adopt: %w", err)
	}
	cfg.ExtraFiles = nil
	warm := Dial(warmSocket)
	if err := warm.do(ctx, http.MethodPost, "/adopt", cfg, nil); err != nil {
		return nil, fmt.Errorf("shim adopt: %w", err)
	}
	c := Dial(cfg.Socket)
	if err := c.Ping(ctx); err != nil {
		return nil, fmt.Errorf("shim adopt: the adopted shim does not answer: %w", err)
	}
	return c, nil
}
