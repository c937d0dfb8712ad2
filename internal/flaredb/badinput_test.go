package flaredb_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// TestBadInputWritesNothing sends oversize and malformed requests straight
// to a member (bypassing the client's own checks) and checks each is
// refused with the right code and that nothing was written.
func TestBadInputWritesNothing(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{})
	leader := c.WaitLeader()
	addr := c.Members[leader].APIAddr
	cl := c.Client()
	ctx := context.Background()
	before, _, err := cl.Revision(ctx, false)
	if err != nil {
		t.Fatal(err)
	}

	txn := func(ns string, ops ...wire.Op) []byte {
		return (&wire.TxnRequest{Namespace: ns, Txn: wire.Txn{Then: ops}}).Encode()
	}
	ok := putOp("ok", "v")
	bigKey := bytes.Repeat([]byte("k"), storage.MaxKeySize+1)
	bigVal := make([]byte, storage.MaxValueSize+1)
	many := make([]wire.Op, storage.MaxTxnOps+1)
	for i := range many {
		many[i] = putOp("m", "v")
	}
	valid := txn("", ok)
	rangeTxn := func(key, end []byte) []byte {
		return (&wire.TxnRequest{Txn: wire.Txn{
			If:   []wire.Compare{{Key: key, Target: wire.CompareRangeEmpty, RangeEnd: end}},
			Then: []wire.Op{ok},
		}}).Encode()
	}
	for _, tc := range []struct {
		name    string
		path    string
		body    []byte
		headers map[string]string
		status  int
		code    wire.Code
	}{
		{"key too large", wire.PathTxn, txn("", ok, wire.Op{Type: wire.OpPut, Key: bigKey}), nil, 400, wire.CodeKeyTooLarge},
		{"value too large", wire.PathTxn, txn("", ok, wire.Op{Type: wire.OpPut, Key: []byte("x"), Value: bigVal}), nil, 400, wire.CodeValueTooLarge},
		{"too many ops", wire.PathTxn, txn("", many...), nil, 400, wire.CodeTooManyOps},
		{"empty key", wire.PathTxn, txn("", ok, wire.Op{Type: wire.OpPut}), nil, 400, wire.CodeEmptyKey},
		{"unknown op", wire.PathTxn, txn("", ok, wire.Op{Type: 9, Key: []byte("x")}), nil, 400, wire.CodeInvalid},
		{"negative ttl", wire.PathTxn, txn("", wire.Op{Type: wire.OpPut, Key: []byte("x"), TTL: -1}), nil, 400, wire.CodeInvalid},
		{"range end before key", wire.PathTxn, rangeTxn([]byte("b"), []byte("a")), nil, 400, wire.CodeInvalidRange},
		{"range end equals key", wire.PathTxn, rangeTxn([]byte("b"), []byte("b")), nil, 400, wire.CodeInvalidRange},
		{"range end too large", wire.PathTxn, rangeTxn([]byte("b"), bigKey), nil, 400, wire.CodeKeyTooLarge},
		{"bad namespace", wire.PathTxn, txn("Bad NS", ok), nil, 400, wire.CodeBadNamespace},
		{"garbage", wire.PathTxn, []byte("GET / HTTP/1.1\r\n\r\n"), nil, 400, wire.CodeVersion},
		{"empty body", wire.PathTxn, nil, nil, 400, wire.CodeMalformed},
		{"wrong version", wire.PathTxn, append([]byte{9}, valid[1:]...), nil, 400, wire.CodeVersion},
		{"wrong message", wire.PathTxn, (&wire.GetRequest{Key: []byte("k")}).Encode(), nil, 400, wire.CodeMalformed},
		{"truncated", wire.PathTxn, valid[:len(valid)-2], nil, 400, wire.CodeMalformed},
		{"trailing bytes", wire.PathTxn, append(bytes.Clone(valid), 0), nil, 400, wire.CodeMalformed},
		{"forged count", wire.PathTxn, []byte{wire.Version, byte(wire.TagTxnRequest), 0, 0, 0x7f, 0}, nil, 400, wire.CodeMalformed},
		{"forged length", wire.PathTxn, []byte{wire.Version, byte(wire.TagTxnRequest), 0, 0, 1, 1, 0xff, 0xff, 0xff, 0x0f}, nil, 400, wire.CodeKeyTooLarge},
		{"body too large", wire.PathTxn, make([]byte, wire.MaxRequestBytes+1), nil, 413, wire.CodeRequestTooLarge},
		{"wrong content type", wire.PathTxn, valid, map[string]string{"Content-Type": "application/json"}, 400, wire.CodeMalformed},
		{"wrong cluster", wire.PathTxn, valid, map[string]string{wire.HeaderCluster: "another"}, 403, wire.CodeWrongCluster},
		{"no cluster", wire.PathTxn, valid, map[string]string{wire.HeaderCluster: ""}, 403, wire.CodeWrongCluster},
		{"compact garbage", wire.PathCompact, []byte{wire.Version, byte(wire.TagCompactRequest), 0x80}, nil, 400, wire.CodeMalformed},
		{"member add without address", wire.PathMemberAdd, (&wire.MemberAddRequest{Member: wire.Member{ID: "x"}}).Encode(), nil, 400, wire.CodeInvalid},
		{"watch bad prefix", wire.PathWatch, (&wire.WatchRequest{Prefix: bigKey}).Encode(), nil, 400, wire.CodeKeyTooLarge},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			status, out := rawPost(t, addr, tc.path, c.ID, tc.body, tc.headers)
			we, err := wire.DecodeError(out)
			if err != nil {
				t.Fatalf("status %d, undecodable error body %q: %v", status, out, err)
			}
			if status != tc.status || we.Code != tc.code {
				t.Fatalf("status %d code %d (%s), want %d code %d", status, we.Code, we.Message, tc.status, tc.code)
			}
			if we.Message == "" {
				t.Fatal("error without a message")
			}
			t.Logf("%d %s", status, we.Message)
		})
	}
	if got := httpGet(t, addr, wire.PathTxn); got != http.StatusMethodNotAllowed {
		t.Fatalf("GET status %d", got)
	}

	// The client refuses oversize input before sending anything.
	s, err := client.NewStore(cl, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := storage.Put(ctx, s, bigKey, nil); !errors.Is(err, storage.ErrKeyTooLarge) {
		t.Fatalf("client put big key: %v", err)
	}
	if _, err := storage.Put(ctx, s, []byte("x"), bigVal); !errors.Is(err, storage.ErrValueTooLarge) {
		t.Fatalf("client put big value: %v", err)
	}

	after, _, err := cl.Revision(ctx, false)
	if err != nil || after != before {
		t.Fatalf("revision %d -> %d (%v): a rejected request wrote", before, after, err)
	}
	if kvs, _, err := cl.Range(ctx, "", nil, nil, client.RangeOptions{}); err != nil || len(kvs) != 0 {
		t.Fatalf("store holds %d keys (%v)", len(kvs), err)
	}
}

func httpGet(t *testing.T, addr, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestWrongClusterRefused: a client and a member configured for another
// cluster are refused by the API and by the Raft transport handshake, and
// nothing changes in the cluster.
func TestWrongClusterRefused(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{})
	ctx := context.Background()
	before, err := c.Members[0].Server.Status()
	if err != nil {
		t.Fatal(err)
	}

	// A client of another cluster gets a clear, non-retried error.
	wrong, err := client.New(client.Config{Endpoints: []string{c.Members[0].APIAddr}, ClusterID: "another", RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	start := time.Now()
	if _, err := wrong.Txn(ctx, "", wire.Txn{Then: []wire.Op{putOp("x", "y")}}); !errors.Is(err, wire.ErrWrongCluster) {
		t.Fatalf("write with a wrong cluster ID: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("wrong cluster error was retried")
	}

	// A member of another cluster that lists m0 as a fellow voter tries to
	// win an election through it: the handshake refuses every connection.
	intruder := flaredbtest.New(t, 1, flaredbtest.Options{})
	intruder.ID = "another"
	voters := []flaredb.Peer{
		{ID: intruder.Members[0].ID + "-x", RaftAddress: intruder.Members[0].RaftAddr, APIAddress: intruder.Members[0].APIAddr},
		{ID: c.Members[0].ID, RaftAddress: c.Members[0].RaftAddr, APIAddress: c.Members[0].APIAddr},
		{ID: c.Members[1].ID, RaftAddress: c.Members[1].RaftAddr, APIAddress: c.Members[1].APIAddr},
	}
	cfg := intruder.Config(0, voters, nil)
	cfg.ID = voters[0].ID
	intruder.StartWith(0, cfg)
	testkit.Eventually(t, 20*time.Second, "m0 to refuse the intruder's connections", func() bool {
		return c.Members[0].Server.Stats().RefusedPeers > 0
	})
	if _, err := wrong.Status(ctx, c.Members[1].APIAddr); !errors.Is(err, wire.ErrWrongCluster) {
		t.Fatalf("status with a wrong cluster ID: %v", err)
	}
	intruder.Stop(0)

	after, err := c.Members[0].Server.Status()
	if err != nil {
		t.Fatal(err)
	}
	if after.Term != before.Term || after.Revision != before.Revision || len(after.Members) != 3 {
		t.Fatalf("cluster changed: before %+v after %+v", before, after)
	}
	writeKeys(t, c.Client(), "still-fine", 3)
}
