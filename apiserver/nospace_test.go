package apiserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/store"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// TestNoSpace503: once etcd raises its NOSPACE alarm (a real embedded etcd
// with a tiny backend quota, filled for real), writes are answered 503
// with what the operator must do, reads still work, and nothing crashes.
func TestNoSpace503(t *testing.T) {
	e, cli := startEtcd(t, 2<<20)
	ss := newSecServerOn(t, store.New(cli), nil)
	acme := ss.tenant(v1.TenantRequest{Name: "acme"})
	ss.must(http.StatusCreated, acme, "POST", "/v1/instances", inst("before", nil))

	// Fill etcd until it refuses: the alarm is etcd's, not ours.
	ctx := context.Background()
	val := strings.Repeat("x", 64<<10)
	filled := false
	for i := 0; i < 200 && !filled; i++ {
		_, err := cli.Put(ctx, fmt.Sprintf("/fill/%d", i), val)
		switch {
		case err == nil:
		case strings.Contains(err.Error(), rpctypes.ErrNoSpace.Error()):
			filled = true
		default:
			t.Fatalf("fill etcd: %v", err)
		}
	}
	if !filled {
		t.Fatal("etcd never raised NOSPACE with a 2 MiB quota after 12 MiB of writes")
	}
	r := ss.do(acme, "POST", "/v1/instances", inst("after", nil))
	if r.code != http.StatusServiceUnavailable || !strings.Contains(r.err.Message, "the state store is full") || !strings.Contains(r.err.Message, "etcdctl alarm disarm") {
		t.Errorf("create while NOSPACE = %s; want 503 telling the operator what to do", r)
	}
	ss.must(http.StatusServiceUnavailable, ss.admin, "POST", "/v1/tokens", v1.TokenRequest{Tenant: "acme"})
	ss.must(http.StatusOK, acme, "GET", "/v1/instances/before", nil)
	select {
	case err := <-e.Err():
		t.Errorf("etcd failed: %v", err)
	default:
	}
}

// startEtcd starts an etcd of its own (quota: its backend quota, 0 for
// etcd's default) and returns it with a gRPC client over loopback TCP.
// Unlike the in-process v3client, a real gRPC stream does not deadlock
// when many watches end at once (the v3client adapter's unbuffered
// channels do: its run loop blocks sending a cancel while the server
// blocks sending an event back).
func startEtcd(t *testing.T, quota int64) (*embed.Etcd, *clientv3.Client) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.Logger, cfg.LogLevel = "zap", "fatal"
	cfg.QuotaBackendBytes = quota
	cu := url.URL{Scheme: "http", Host: freeAddr(t)}
	pu := url.URL{Scheme: "http", Host: freeAddr(t)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatal("etcd did not become ready in 60s")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cu.String()}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return e, cli
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
