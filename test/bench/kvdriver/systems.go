package kvdriver

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// errNotFound: a get found no value (the keys were not preloaded).
var errNotFound = errors.New("key not found")

// flareConn drives flaredb through its Go client: a put is a one-op write
// transaction, a get a linearizable point read (the default).
type flareConn struct{ c *client.Client }

func dialFlareDB(endpoints []string, cfg Config) (Conn, error) {
	if cfg.ClusterID == "" {
		return nil, errors.New("flaredb needs a cluster ID")
	}
	c, err := client.New(client.Config{Endpoints: endpoints, ClusterID: cfg.ClusterID, RequestTimeout: 30 * time.Second,
		CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile})
	if err != nil {
		return nil, err
	}
	return flareConn{c}, nil
}

func (f flareConn) Put(ctx context.Context, key string, value []byte) error {
	_, err := f.c.Txn(ctx, "", wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: []byte(key), Value: value}}})
	return err
}

func (f flareConn) Get(ctx context.Context, key string) error {
	_, found, _, err := f.c.Get(ctx, "", []byte(key), client.ReadOptions{})
	if err == nil && !found {
		err = fmt.Errorf("%s: %w", key, errNotFound)
	}
	return err
}

func (f flareConn) Close() error { return f.c.Close() }

// etcdConn drives etcd through clientv3 (one gRPC connection per member,
// requests balanced over them): a put, and a get with the default
// (linearizable) consistency.
type etcdConn struct{ c *clientv3.Client }

func dialEtcd(endpoints []string) (Conn, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	return etcdConn{c}, nil
}

func (e etcdConn) Put(ctx context.Context, key string, value []byte) error {
	_, err := e.c.Put(ctx, key, string(value))
	return err
}

func (e etcdConn) Get(ctx context.Context, key string) error {
	r, err := e.c.Get(ctx, key)
	if err == nil && len(r.Kvs) == 0 {
		err = fmt.Errorf("%s: %w", key, errNotFound)
	}
	return err
}

func (e etcdConn) Close() error { return e.c.Close() }
