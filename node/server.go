package node

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/internal/logfile"
	"github.com/cube-platform/cube/shim"
)

// secretHeader must match apiserver.NodeSecretHeader.
const secretHeader = "X-Cube-Node-Secret"

func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /instances/{tenant}/{name}/logs", a.serveLogs)
	mux.HandleFunc("POST /instances/{tenant}/{name}/exec", a.serveExec)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(secretHeader)), []byte(a.secret)) != 1 {
			httpErr(w, http.StatusUnauthorized, "Unauthorized", "node agent: bad or missing server secret")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func httpErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v1.ErrorBody{Error: v1.ErrorDetail{Code: code, Message: msg}})
}

// settleWait bounds how long a logs or exec request waits for a restarted
// agent to list and adopt its instances before it answers from what it has.
const settleWait = 15 * time.Second

// lookup finds tenant/name once the agent knows its instances: right after
// a restart, a request would otherwise get "not on node" for an instance
// whose shim is running but not yet adopted.
func (a *Agent) lookup(r *http.Request) (*worker, *v1.Instance) {
	ctx, cancel := context.WithTimeout(r.Context(), settleWait)
	defer cancel()
	select {
	case <-a.listed:
	case <-ctx.Done():
	}
	wk, _ := a.find(r.PathValue("tenant"), r.PathValue("name"))
	if wk == nil {
		return nil, nil
	}
	select {
	case <-wk.settled:
	case <-ctx.Done():
	}
	return wk, wk.current()
}

// find returns the worker and instance for tenant/name.
func (a *Agent) find(tenant, name string) (*worker, *v1.Instance) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range a.workers {
		in := w.current()
		if in != nil && in.Metadata.Tenant == tenant && in.Metadata.Name == name {
			return w, in
		}
	}
	return nil, nil
}

func pickContainer(in *v1.Instance, name string) (string, error) {
	if name == "" {
		return in.Spec.Containers[0].Name, nil
	}
	for _, c := range in.Spec.Containers {
		if c.Name == name {
			return name, nil
		}
	}
	names := make([]string, 0, len(in.Spec.Containers))
	for _, c := range in.Spec.Containers {
		names = append(names, c.Name)
	}
	return "", fmt.Errorf("container %q not found in instance %q (it has: %s)", name, in.Metadata.Name, strings.Join(names, ", "))
}

// parseTime accepts RFC 3339, Unix seconds, or a duration back from now.
func parseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Unix(0, int64(n*1e9)), nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339, Unix seconds, or a duration such as 42m", s)
}

func (a *Agent) serveLogs(w http.ResponseWriter, r *http.Request) {
	wk, in := a.lookup(r)
	if wk == nil {
		httpErr(w, http.StatusNotFound, "NotFound", fmt.Sprintf("instance %q is not on node %s", r.PathValue("name"), a.cfg.Name))
		return
	}
	q := r.URL.Query()
	ctr, err := pickContainer(in, q.Get("container"))
	if err != nil {
		httpErr(w, http.StatusNotFound, "NotFound", err.Error())
		return
	}
	opts := logfile.ReadOptions{Follow: q.Get("follow") == "true", Tail: -1, Timestamps: q.Get("timestamps") == "true"}
	if t := q.Get("tail"); t != "" {
		if opts.Tail, err = strconv.Atoi(t); err != nil {
			httpErr(w, http.StatusBadRequest, "InvalidArgument", fmt.Sprintf("tail %q is not a number", t))
			return
		}
	}
	now := a.cfg.Now()
	if opts.Since, err = parseTime(q.Get("since"), now); err != nil {
		httpErr(w, http.StatusBadRequest, "InvalidArgument", "since: "+err.Error())
		return
	}
	if opts.Until, err = parseTime(q.Get("until"), now); err != nil {
		httpErr(w, http.StatusBadRequest, "InvalidArgument", "until: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	path := filepath.Join(wk.dir, "logs", ctr+".log")
	_ = logfile.Read(r.Context(), path, opts, flushWriter{w})
}

// flushWriter flushes every write so followers see lines at once.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}

// serveExec upgrades the connection and splices it to the shim's exec
// stream; frames pass through undecoded.
func (a *Agent) serveExec(w http.ResponseWriter, r *http.Request) {
	wk, in := a.lookup(r)
	if wk == nil {
		httpErr(w, http.StatusNotFound, "NotFound", fmt.Sprintf("instance %q is not on node %s", r.PathValue("name"), a.cfg.Name))
		return
	}
	var req v1.ExecRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		httpErr(w, http.StatusBadRequest, "InvalidArgument", "exec request: "+err.Error())
		return
	}
	if len(req.Command) == 0 {
		httpErr(w, http.StatusUnprocessableEntity, "InvalidArgument", "exec needs a command")
		return
	}
	ctr, err := pickContainer(in, req.Container)
	if err != nil {
		httpErr(w, http.StatusNotFound, "NotFound", err.Error())
		return
	}
	wk.mu.Lock()
	sc := wk.shim
	wk.mu.Unlock()
	if sc == nil || in.Status.Phase != v1.PhaseRunning {
		msg := fmt.Sprintf("instance %q is %s; exec needs it Running", in.Metadata.Name, in.Status.Phase)
		if in.Status.Phase == v1.PhaseSuspended {
			msg += fmt.Sprintf(" (`cube resume %s` runs it again)", in.Metadata.Name)
		}
		httpErr(w, http.StatusConflict, "Conflict", msg)
		return
	}
	up, err := sc.ExecConn(r.Context(), ctr, shim.ExecRequest{Args: req.Command, Env: req.Env, TTY: req.TTY})
	if err != nil {
		httpErr(w, http.StatusConflict, "Conflict", "exec: "+err.Error())
		return
	}
	defer up.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		httpErr(w, http.StatusInternalServerError, "Internal", "connection cannot be upgraded")
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + v1.StreamProtocol + "\r\n\r\n")
	_ = brw.Flush()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, brw); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, up); done <- struct{}{} }()
	<-done
}
