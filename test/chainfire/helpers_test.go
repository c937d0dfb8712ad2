//go:build linux

package chainfire_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ultracloud/ultracloud/internal/runtime/coord"
	"github.com/ultracloud/ultracloud/test/harness"
)

// chainfireCLI runs `ultracloud chainfire --endpoints <endpoints> --cacert
// <cluster CA> args...` inside host h's namespace, as an operator on that
// machine would, and returns its output.
func chainfireCLI(t *testing.T, ctx context.Context, c *harness.Cluster, h *harness.Host, endpoints []*harness.Host, args ...string) (string, error) {
	t.Helper()
	var urls []string
	for _, e := range endpoints {
		urls = append(urls, e.ChainfireURL())
	}
	full := append([]string{"chainfire", "--endpoints", strings.Join(urls, ","), "--cacert", c.ChainfireCAFile(), "--timeout", "10s"}, args...)
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := h.Exec(cctx, harness.Binary(t), full...)
	if err == nil {
		// Failures are reported (with the output) by the caller.
		t.Logf("%s$ ultracloud %s\n%s", h.Name(), strings.Join(full, " "), strings.TrimSpace(string(out)))
	}
	return string(out), err
}

// startWriters runs n writers putting ack/w<i>/<seq> through cl until the
// returned stop is called (stop waits for them); every put that returned
// success is recorded in a.
func startWriters(ctx context.Context, n int, a *acks, clients func(i int) *clientv3.Client) (stop func()) {
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range n {
		cl := clients(w)
		wg.Go(func() {
			for i := 0; wctx.Err() == nil; i++ {
				k, v := fmt.Sprintf("ack/w%d/%06d", w, i), fmt.Sprintf("v%d-%d", w, i)
				pctx, cancel := context.WithTimeout(wctx, 2*time.Second)
				_, err := cl.Put(pctx, k, v)
				cancel()
				if err != nil {
					if wctx.Err() == nil {
						a.fail(err) // outcome unknown: not counted as acknowledged
					}
					continue
				}
				a.add(k, v)
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// waitAcks waits until a holds at least n acknowledged writes.
func waitAcks(t *testing.T, ctx context.Context, a *acks, n int, timeout time.Duration, what string) {
	t.Helper()
	err := harness.WaitFor(ctx, timeout, what, func(context.Context) (bool, string) {
		got := a.count()
		return got >= n, fmt.Sprintf("%d acknowledged writes", got)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// linearRev is the cluster's current revision, read linearizably through cl.
func linearRev(t *testing.T, ctx context.Context, cl *clientv3.Client) int64 {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cl.Get(rctx, "\x00")
	if err != nil {
		t.Fatalf("linearizable read: %v", err)
	}
	return resp.Header.Revision
}

// keyspace reads every key and value from cl's member (serializable, at
// rev if not 0), except the nodes' own coordination keys (coord.KeyPrefix:
// the election of the iam-projects singleton), which come and go with the
// nodes' leases and are not the data under test.
func keyspace(t *testing.T, ctx context.Context, cl *clientv3.Client, rev int64) map[string]string {
	t.Helper()
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSerializable()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cl.Get(gctx, "", opts...)
	if err != nil {
		t.Fatalf("reading the keyspace: %v", err)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if strings.HasPrefix(string(kv.Key), coord.KeyPrefix) {
			continue
		}
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

// diffKeyspaces describes how got differs from want (at most a few keys).
func diffKeyspaces(want, got map[string]string) string {
	var d []string
	for k, v := range want {
		if gv, ok := got[k]; !ok {
			d = append(d, fmt.Sprintf("missing %s", k))
		} else if gv != v {
			d = append(d, fmt.Sprintf("%s = %q, want %q", k, gv, v))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("extra %s", k))
		}
	}
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("... %d differences in all", len(d)))
	}
	return strings.Join(d, "; ")
}
