package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/internal/stream"
	"github.com/cube-platform/cube/sandbox"
)

// The shim's HTTP API on its unix socket:
//
//	GET  /ping                      200 {"pid":N}
//	GET  /state?after=V[&wait=25s]  200 State; blocks while State.Version <= V
//	POST /start                     200 at once; containers held by Config.AwaitStart may start
//	POST /exec?container=NAME       body ExecRequest, header Upgrade: cube-stream;
//	                                101, then internal/stream frames both ways
//	POST /stop?grace=10s            200 once every container has exited
//	POST /shutdown?grace=10s        200 once the sandbox is gone; then the shim exits
//	POST /suspend                   200 State once the sandbox is saved (sandbox.Suspender)
//	POST /resume                    200 State once it runs again
//
// Errors are {"error": "..."} with 400 (bad request; a backend that
// cannot suspend), 404 (unknown container), 409 (container not running,
// instance suspended or not ready for it) or 500.
const (
	upgradeProto    = "cube-stream"
	defaultLongPoll = 25 * time.Second
	maxLongPoll     = 60 * time.Second
)

// ExecRequest is the body of POST /exec.
type ExecRequest struct {
	Args []string `json:"args"`
	Env  []string `json:"env,omitempty"` // KEY=VALUE, added to the container's
	TTY  bool     `json:"tty,omitempty"`
}

type errorBody struct {
	Error string `json:"error"`
}

// maxStartBody bounds a start request (an interface with its routes).
const maxStartBody = 64 << 10

func (s *supervisor) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]int{"pid": os.Getpid()})
	})
	mux.HandleFunc("GET /state", s.handleState)
	mux.HandleFunc("POST /exec", s.handleExec)
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, r *http.Request) {
		var req StartRequest
		if r.ContentLength != 0 {
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxStartBody)).Decode(&req); err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("start request: %w", err))
				return
			}
		}
		s.startWith(req.Interface)
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		grace, err := s.grace(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if err := s.stop(r.Context(), grace); err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		st, _ := s.snapshot()
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /suspend", s.handleTransition(s.suspend))
	mux.HandleFunc("POST /resume", s.handleTransition(s.resume))
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) {
		grace, err := s.grace(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		// Not the request's context: a client that gives up must not leave
		// the sandbox half destroyed.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), grace+time.Minute)
		defer cancel()
		if err := s.shutdown(ctx, grace); err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	return mux
}

// handleTransition serves a suspend or resume. Not under the request's
// context: a client that gives up must not leave the sandbox half saved
// or half restored.
func (s *supervisor) handleTransition(do func(context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), suspendTimeout)
		defer cancel()
		if err := do(ctx); err != nil {
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, errdefs.ErrInvalid):
				code = http.StatusBadRequest
			case errors.Is(err, errdefs.ErrConflict):
				code = http.StatusConflict
			}
			writeError(w, code, err)
			return
		}
		st, _ := s.snapshot()
		writeJSON(w, http.StatusOK, st)
	}
}

func (s *supervisor) grace(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("grace")
	if v == "" {
		return s.cfg.StopGrace, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("grace %q: want a duration such as 10s", v)
	}
	return d, nil
}

func (s *supervisor) handleState(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	if v := q.Get("after"); v != "" {
		var err error
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("after %q: want a state version", v))
			return
		}
	}
	wait := defaultLongPoll
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("wait %q: want a duration such as 25s", v))
			return
		}
		wait = min(d, maxLongPoll)
	}
	st, changed := s.snapshot()
	if st.Version <= after {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-changed:
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-s.exited:
		}
		st, _ = s.snapshot()
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *supervisor) handleExec(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("container")
	var req ExecRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("exec request body: %w", err))
		return
	}
	if len(req.Args) == 0 {
		writeError(w, http.StatusBadRequest, errors.New("exec: no command given"))
		return
	}
	if r.Header.Get("Upgrade") != upgradeProto {
		writeError(w, http.StatusBadRequest, fmt.Errorf("exec needs the header Upgrade: %s", upgradeProto))
		return
	}
	st, _ := s.snapshot()
	if st.Phase == PhaseSuspended {
		writeError(w, http.StatusConflict, errors.New("the instance is suspended: resume it first; exec needs a running container"))
		return
	}
	found := false
	for _, c := range st.Containers {
		if c.Name != name {
			continue
		}
		found = true
		if c.Phase != sandbox.PhaseRunning {
			writeError(w, http.StatusConflict, fmt.Errorf("container %q is not running (%s); exec needs a running container", name, c.Phase))
			return
		}
	}
	if !found {
		writeError(w, http.StatusNotFound, fmt.Errorf("no container named %q in this instance", name))
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeError(w, http.StatusInternalServerError, errors.New("connection cannot be upgraded"))
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		s.log.Warn("hijack exec connection", "err", err)
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "+upgradeProto+"\r\nConnection: Upgrade\r\n\r\n"); err != nil {
		return
	}
	s.serveExec(name, req, brw.Reader, conn)
}

// serveExec runs one exec session on an upgraded connection. The client
// ends stdin with a CloseStdin frame; a connection that ends (read error or
// EOF) means the client is gone, and the process is killed.
func (s *supervisor) serveExec(name string, req ExecRequest, in io.Reader, out io.Writer) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	fw := stream.NewWriter(out)
	stdinR, stdinW := io.Pipe()
	defer stdinR.Close()
	resize := make(chan sandbox.WindowSize, 16)
	go func() {
		defer stdinW.Close()
		for {
			f, err := stream.ReadFrame(in)
			if err != nil {
				cancel()
				return
			}
			switch f.Kind {
			case stream.Stdin:
				if _, err := stdinW.Write(f.Payload); err != nil && !errors.Is(err, io.ErrClosedPipe) {
					return
				}
			case stream.CloseStdin:
				stdinW.Close()
			case stream.Resize:
				var ws sandbox.WindowSize
				if json.Unmarshal(f.Payload, &ws) == nil {
					select {
					case resize <- ws:
					default: // a flood of resizes: the latest ones win later
					}
				}
			}
		}
	}()
	stdio := sandbox.Stdio{Stdin: stdinR, Stdout: fw.KindWriter(stream.Stdout), Stderr: fw.KindWriter(stream.Stderr)}
	code, err := s.sb.Exec(ctx, name, sandbox.ExecSpec{Args: req.Args, Env: req.Env, TTY: req.TTY, Resize: resize}, stdio)
	if err != nil && ctx.Err() == nil {
		fw.WriteFrame(stream.Error, []byte(err.Error()))
		return
	}
	fw.WriteFrame(stream.Exit, []byte(strconv.Itoa(code)))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, errorBody{Error: err.Error()})
}
