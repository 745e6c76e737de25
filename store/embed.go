package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Embedded is an etcd server running inside this process.
type Embedded struct {
	etcd   *embed.Etcd
	Client *clientv3.Client
}

// maxSocketPath is how long a unix socket path may be (sun_path is 108
// bytes with its NUL; leave room).
const maxSocketPath = 100

// SocketName is the embedded etcd's client socket inside its data dir.
const SocketName = "etcd.sock"

// StartEmbedded starts etcd with its data under dir (created if missing,
// mode 0700) and returns a client that talks to it over its socket.
//
// The member opens no TCP port: a loopback port is open to every local
// user, and etcd's data holds token hashes and node secrets. It has no
// peer listener (a single member has no peers), and its only client
// listener is a unix socket dir/etcd.sock, mode 0600 inside the 0700 dir:
// cube's own client, and an operator's `etcdctl --endpoints
// unix://DIR/etcd.sock` as root.
func StartEmbedded(ctx context.Context, dir string, log *slog.Logger) (*Embedded, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	// MkdirAll keeps the mode of a dir that exists; an old data dir may
	// be wider.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "cube"
	cfg.Dir = filepath.Join(dir, "data")
	cfg.Logger = "zap"
	// etcd logs every listener it closes at shutdown as an error; its real
	// failures reach us through Err() and the client's errors instead.
	cfg.LogLevel = "fatal"
	// Advertised URLs are only recorded in the member list; nothing
	// listens on them. A data dir made before the member went socket-only
	// keeps advertising its old peer URL so its recorded identity holds.
	peer := legacyPeerURL(filepath.Join(dir, "ports.json"))
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = nil, []url.URL{peer}
	cfg.AdvertiseClientUrls = []url.URL{{Scheme: "http", Host: "127.0.0.1:2379"}}
	cfg.ListenClientUrls = nil
	sock, err := socketPath(dir)
	if err != nil {
		return nil, err
	}
	_ = os.Remove(sock) // left by a crash; etcd refuses an existing socket
	cfg.ListenClientUrls = []url.URL{{Scheme: "unix", Path: sock}}
	cfg.ListenClientHttpUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Compact history older than an hour; resumed watches and continue
	// tokens older than that get 410 Gone.
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "1h"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("embedded etcd did not become ready in 60s")
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	// The dir is 0700 already; the socket's own mode is a second lock.
	if err := os.Chmod(sock, 0o600); err != nil {
		e.Close()
		return nil, fmt.Errorf("embedded etcd socket: %w", err)
	}
	// A gRPC client over the socket, not etcd's in-process v3client: with
	// two dozen watches ending at once while events arrive, v3client's
	// adapter deadlocks and every watch of the process stalls (a tenant
	// can open that many), while a real gRPC stream does not.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("embedded etcd client: %w", err)
	}
	log.Info("embedded etcd ready", "dir", dir, "socket", sock)
	return &Embedded{etcd: e, Client: cli}, nil
}

// socketPath is dir/etcd.sock, or, when dir's path is too long for a
// unix socket, a socket named after dir in a 0700 dir under /run/cube.
func socketPath(dir string) (string, error) {
	sock := filepath.Join(dir, SocketName)
	if len(sock) <= maxSocketPath {
		return sock, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(abs))
	run := "/run/cube/etcd"
	if err := os.MkdirAll(run, 0o700); err != nil {
		return "", fmt.Errorf("embedded etcd socket dir: %w", err)
	}
	if err := os.Chmod(run, 0o700); err != nil {
		return "", fmt.Errorf("embedded etcd socket dir: %w", err)
	}
	return filepath.Join(run, hex.EncodeToString(sum[:8])+".sock"), nil
}

// legacyPeerURL is the peer URL a data dir recorded when the member still
// listened on loopback TCP (ports.json), or a placeholder for new dirs.
func legacyPeerURL(path string) url.URL {
	var p struct {
		Peer int `json:"peer"`
	}
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &p) == nil && p.Peer > 0 {
		return url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", p.Peer)}
	}
	return url.URL{Scheme: "http", Host: "127.0.0.1:2380"}
}

// Err reports a fatal etcd error.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the client, then the server.
func (e *Embedded) Close() {
	e.Client.Close()
	e.etcd.Close()
}
