package apiserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"

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
			release, err := s.streams.acquire(r, "log follow or exec session")
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
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL = target
				pr.Out.Host = target.Host
				pr.Out.Header.Del("Authorization")
				pr.Out.Header.Set(NodeSecretHeader, secret)
			},
			FlushInterval: -1,
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				writeError(w, fmt.Errorf("%w: node %s (%s) did not answer: %v", errdefs.ErrUnavailable, node.Metadata.Name, node.Status.Address, err))
			},
		}
		rp.ServeHTTP(w, r)
	}
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
