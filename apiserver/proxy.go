package apiserver

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"

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
