package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

// proxyToNode forwards logs and exec to the node agent that runs the
// instance. Exec is an HTTP upgrade; ReverseProxy splices the upgraded
// connection both ways without looking inside.
func (s *Server) proxyToNode(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := requireRole(r, store.RoleTenant); err != nil {
			writeError(w, err)
			return
		}
		if kind == "exec" || r.URL.Query().Get("follow") == "true" {
			var release func()
			var err error
			r, release, err = s.openStream(r, "log follow or exec session")
			if err != nil {
				writeError(w, err)
				return
			}
			defer release()
		}
		if kind == "exec" {
			if err := checkExecBody(r); err != nil {
				writeError(w, err)
				return
			}
		}
		in, err := s.lookupInstance(r)
		if err != nil {
			writeError(w, err)
			return
		}
		if in.Status.Node == "" {
			writeError(w, fmt.Errorf("%w: instance %q is %s and not on a node yet; wait with `cube wait %s --for running`", errdefs.ErrConflict, in.Metadata.Name, in.Status.Phase, in.Metadata.Name))
			return
		}
		node, err := s.store.Nodes().Get(r.Context(), s.store.Nodes().Key(in.Status.Node))
		if err != nil {
			writeError(w, fmt.Errorf("node %s of instance %q: %w", in.Status.Node, in.Metadata.Name, err))
			return
		}
		secret, err := s.store.GetNodeSecret(r.Context(), node.Metadata.Name)
		if err != nil {
			writeError(w, err)
			return
		}
		target := &url.URL{Scheme: "http", Host: node.Status.Address,
			Path:     fmt.Sprintf("/instances/%s/%s/%s", url.PathEscape(in.Metadata.Tenant), url.PathEscape(in.Metadata.Name), kind),
			RawQuery: r.URL.RawQuery}
		var transport http.RoundTripper
		if path, ok := strings.CutPrefix(node.Status.Address, "unix:"); ok {
			if transport, err = s.nodeSocket(path); err != nil {
				s.log.Warn("refused node socket", "node", node.Metadata.Name, "err", err)
				writeError(w, fmt.Errorf("%w: node %s cannot be reached from this server", errdefs.ErrUnavailable, node.Metadata.Name))
				return
			}
			target.Host = "node"
		}
		rp := &httputil.ReverseProxy{
			Transport: transport,
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL = target
				pr.Out.Host = target.Host
				pr.Out.Header.Del("Authorization")
				pr.Out.Header.Set(NodeSecretHeader, secret)
			},
			FlushInterval: -1,
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				s.log.Warn("node did not answer", "node", node.Metadata.Name, "address", node.Status.Address, "err", err)
				writeError(w, fmt.Errorf("%w: node %s did not answer; try again shortly", errdefs.ErrUnavailable, node.Metadata.Name))
			},
		}
		rp.ServeHTTP(w, r)
	}
}

// nodeSocket returns a transport to a node agent's unix socket. Only a
// socket inside Config.NodeSocketDir is dialed: a node reports its own
// address, and must not point the server at any other socket of its host.
func (s *Server) nodeSocket(path string) (http.RoundTripper, error) {
	dir := s.cfg.NodeSocketDir
	if dir == "" {
		return nil, fmt.Errorf("unix node address %q: this server dials no node sockets", path)
	}
	if rel, err := filepath.Rel(dir, filepath.Clean(path)); err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return nil, fmt.Errorf("unix node address %q is outside %s", path, dir)
	}
	if t, ok := s.nodeTransports.Load(path); ok {
		return t.(http.RoundTripper), nil
	}
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 16,
	}
	got, _ := s.nodeTransports.LoadOrStore(path, t)
	return got.(http.RoundTripper), nil
}

// checkExecBody reads the exec request (bounded by the route), refuses
// NUL bytes and oversized commands as instance specs are refused, and
// puts the bytes back for the node.
func checkExecBody(r *http.Request) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err // a *http.MaxBytesError is a 413
	}
	var req v1.ExecRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return fmt.Errorf("%w: exec request is not a valid object: %v", errdefs.ErrInvalid, err)
	}
	if err := req.Validate(); err != nil {
		return err
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	return nil
}
