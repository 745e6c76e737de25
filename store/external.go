package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// External names an etcd cluster that Cube does not run.
type External struct {
	// Endpoints of the cluster's members, e.g. https://10.0.0.1:2379.
	Endpoints []string
	// CAFile verifies the members' certificates (TLS when set).
	CAFile string
	// CertFile and KeyFile are this client's certificate, for members
	// started with --client-cert-auth.
	CertFile, KeyFile string
	// Username and Password, for a cluster with etcd's auth enabled.
	Username, Password string
}

// Validate reports a configuration that cannot work.
func (x External) Validate() error {
	if len(x.Endpoints) == 0 {
		return errors.New("etcd: no endpoints")
	}
	if (x.CertFile == "") != (x.KeyFile == "") {
		return errors.New("etcd: --etcd-certfile and --etcd-keyfile go together")
	}
	tlsWanted := x.CAFile != "" || x.CertFile != ""
	for _, e := range x.Endpoints {
		if tlsWanted && strings.HasPrefix(e, "http://") {
			return fmt.Errorf("etcd endpoint %s is plain http but TLS files were given: use https://", e)
		}
	}
	return nil
}

// Connect dials the cluster and checks that it answers within timeout, so
// a wrong endpoint or certificate fails at boot with its cause rather than
// at the first request.
func (x External) Connect(ctx context.Context, timeout time.Duration) (*clientv3.Client, error) {
	if err := x.Validate(); err != nil {
		return nil, err
	}
	cfg := clientv3.Config{Endpoints: x.Endpoints, DialTimeout: timeout, Username: x.Username, Password: x.Password}
	if x.CAFile != "" || x.CertFile != "" {
		info := transport.TLSInfo{TrustedCAFile: x.CAFile, CertFile: x.CertFile, KeyFile: x.KeyFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		tc.MinVersion = tls.VersionTLS12
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %s: %w", strings.Join(x.Endpoints, ","), err)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := cli.Get(cctx, "/cube/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd %s does not answer: %w", strings.Join(x.Endpoints, ","), err)
	}
	return cli, nil
}
