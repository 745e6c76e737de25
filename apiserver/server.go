// Package apiserver serves Cube's REST API: authentication (bearer tokens,
// stored hashed), validation and admission, CRUD and watch over the store,
// image import/pull, and the proxy of logs and exec to node agents. It
// depends on api/v1, store and image; it never talks to a shim or sandbox.
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/store"
)

// Config of the API server.
type Config struct {
	// Listen is the TCP address to serve on.
	Listen string
	// Store holds the state.
	Store *store.Store
	// Images is where imported and pulled images go.
	Images image.Store
	// Log receives structured logs.
	Log *slog.Logger
	// Now is the clock (tests inject one).
	Now func() time.Time
	// NodeTTL is how long a node stays Ready without a heartbeat.
	NodeTTL time.Duration
	// NodeSocketDir is where local node agents' unix sockets may be
	// (`cube up`'s data dir); empty: node addresses must be TCP.
	NodeSocketDir string
	// RegistryAllow lists registries ("host:port") a tenant may pull from
	// although they resolve to loopback, link-local or platform addresses
	// (`cube up --registry-allow`).
	RegistryAllow []string
	// RegistryDeny lists more prefixes a tenant's pull may not reach (the
	// instance network), on top of loopback, link-local and this host's
	// and the nodes' addresses.
	RegistryDeny []netip.Prefix
	// ReservedPorts are ports the platform listens on (the API, a node
	// agent's); no instance may publish them as host ports.
	ReservedPorts []int
	// EphemeralPorts is the host's ephemeral range, refused as host ports;
	// zero reads /proc/sys/net/ipv4/ip_local_port_range (32768-60999 when
	// it cannot).
	EphemeralPorts [2]int
	// MaxInstances bounds each tenant's stored instances, Pending and
	// finished ones included, unless the tenant has its own bound
	// (default DefaultMaxInstances).
	MaxInstances int
	// MaxStreams bounds each tenant's concurrent watches, waits, log
	// follows and exec sessions (default DefaultMaxStreams).
	MaxStreams int
	// MaxTokens bounds each tenant's tokens (default DefaultMaxTokens).
	MaxTokens int
	// DefaultRuntime is the runtime of an instance that names none, when
	// its tenant may use it (else the tenant's first runtime: microvm).
	// Nil: microvm. `cube up --default-runtime auto` answers microvm once
	// its node can run VMs, runc before.
	DefaultRuntime func() string
	// IdleTimeout closes a keep-alive connection that sends no request
	// for this long (default DefaultIdleTimeout). Without it anyone who
	// reaches the port, with no token, holds connections (and the
	// process's file descriptors, which etcd and the node share) forever.
	IdleTimeout time.Duration
}

// DefaultIdleTimeout is Config.IdleTimeout's default.
const DefaultIdleTimeout = 2 * time.Minute

// Validate checks the config.
func (c *Config) Validate() error {
	if c.Listen == "" || c.Store == nil || c.Images == nil || c.Log == nil {
		return errors.New("apiserver: Listen, Store, Images and Log are required")
	}
	for _, a := range c.RegistryAllow {
		if h, p, err := net.SplitHostPort(a); err != nil || h == "" || p == "" {
			return fmt.Errorf("apiserver: registry allow %q: want HOST:PORT as in image references, e.g. 127.0.0.1:5000", a)
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.NodeTTL == 0 {
		c.NodeTTL = 15 * time.Second
	}
	if c.EphemeralPorts == [2]int{} {
		c.EphemeralPorts = ephemeralRange()
	}
	if c.MaxInstances == 0 {
		c.MaxInstances = DefaultMaxInstances
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = DefaultMaxTokens
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	return nil
}

// Server is the running API server.
type Server struct {
	cfg    Config
	store  *store.Store
	log    *slog.Logger
	srv    *http.Server
	ln     net.Listener
	errc   chan error
	leases *leaseTable
	// nodeTransports caches one transport per node socket path.
	nodeTransports sync.Map
	// streams counts each tenant's open long-lived requests.
	streams *streamLimiter
}

// New builds a server; Start serves it.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, store: cfg.Store, log: cfg.Log.With("component", "apiserver"), errc: make(chan error, 1), leases: newLeaseTable(), streams: newStreamLimiter(cfg.MaxStreams)}
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: cfg.IdleTimeout}
	return s, nil
}

// Handler returns the HTTP handler (for tests).
func (s *Server) Handler() http.Handler { return s.srv.Handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /v1/openapi.json", s.openapi)

	api := http.NewServeMux()
	api.HandleFunc("POST /v1/instances", limitBody(maxBody, s.createInstance))
	api.HandleFunc("GET /v1/instances", s.listInstances)
	api.HandleFunc("GET /v1/instances/{name}", s.getInstance)
	api.HandleFunc("DELETE /v1/instances/{name}", s.deleteInstance)
	api.HandleFunc("PUT /v1/instances/{name}/status", limitBody(maxBody, s.updateInstanceStatus))
	api.HandleFunc("GET /v1/instances/{name}/wait", s.waitInstance)
	api.HandleFunc("POST /v1/instances/{name}/suspend", s.suspendInstance(true))
	api.HandleFunc("POST /v1/instances/{name}/resume", s.suspendInstance(false))
	api.HandleFunc("GET /v1/instances/{name}/logs", s.proxyToNode("logs"))
	api.HandleFunc("POST /v1/instances/{name}/exec", limitBody(maxExecBody, s.proxyToNode("exec")))
	api.HandleFunc("GET /v1/events", s.listEvents)
	api.HandleFunc("GET /v1/nodes", s.listNodes)
	api.HandleFunc("GET /v1/nodes/{name}", s.getNode)
	api.HandleFunc("PUT /v1/nodes/{name}", limitBody(maxBody, s.registerNode))
	api.HandleFunc("POST /v1/nodes/{name}/heartbeat", limitBody(maxSmallBody, s.heartbeat))
	api.HandleFunc("POST /v1/tenants", limitBody(maxSmallBody, s.createTenant))
	api.HandleFunc("GET /v1/tenants", s.listTenants)
	api.HandleFunc("GET /v1/tenants/{name}", s.getTenant)
	api.HandleFunc("PATCH /v1/tenants/{name}", limitBody(maxSmallBody, s.updateTenant))
	api.HandleFunc("DELETE /v1/tenants/{name}", s.deleteTenant)
	api.HandleFunc("POST /v1/tokens", limitBody(maxSmallBody, s.createToken))
	api.HandleFunc("GET /v1/tokens", s.listTokens)
	api.HandleFunc("DELETE /v1/tokens/{id}", s.revokeToken)
	api.HandleFunc("GET /v1/images", s.listImages)
	api.HandleFunc("POST /v1/images/import", s.importImage)
	api.HandleFunc("POST /v1/images/pull", s.pullImage)
	mux.Handle("/v1/", s.authenticate(api))
	return mux
}

// Start listens and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another `cube up` running? pick another --listen)", s.cfg.Listen, err)
	}
	s.ln = ln
	// The server's own port is the platform's too (when Listen asked
	// for any free port, it is known only now).
	s.cfg.ReservedPorts = append(s.cfg.ReservedPorts, PortsOf(ln.Addr().String())...)
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- err
		}
	}()
	s.log.Info("serving", "addr", ln.Addr().String())
	return nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Err reports a fatal serving error.
func (s *Server) Err() <-chan error { return s.errc }

// Close stops serving; open watches and streams are cut.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		return s.srv.Close()
	}
	return nil
}

// PortsOf returns the TCP ports of addresses ("host:port"), skipping
// those without a fixed port (":0", unix sockets).
func PortsOf(addrs ...string) []int {
	var out []int
	for _, a := range addrs {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(p); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}
