package store

import (
	"bytes"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func withPrefix() clientv3.OpOption { return clientv3.WithPrefix() }

func containsBytes(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }
