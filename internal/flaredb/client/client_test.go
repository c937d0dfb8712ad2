package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// member is a scripted flaredb member: answer is called for every call,
// whether it comes as a POST or on a call stream.
type member struct {
	srv   *httptest.Server
	calls atomic.Int64
	// noStreams makes the member answer 404 to call streams, as one from
	// before them would; streamOpens counts the attempts.
	noStreams   bool
	streamOpens atomic.Int64
}

type answerFunc func(n int64, path string, body []byte) (int, []byte)

// hangUp as an answer's status ends the call stream without a reply.
const hangUp = -1

func newMember(t *testing.T, answer answerFunc) *member {
	return startMember(t, &member{}, answer)
}

func startMember(t *testing.T, m *member, answer answerFunc) *member {
	t.Helper()
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == wire.PathStream {
			m.streamOpens.Add(1)
			if m.noStreams {
				http.NotFound(w, r)
				return
			}
		}
		if r.Header.Get(wire.HeaderCluster) != "c1" {
			w.WriteHeader(403)
			w.Write((&wire.Error{Code: wire.CodeWrongCluster, Message: "wrong cluster"}).Encode())
			return
		}
		if r.URL.Path == wire.PathStream {
			m.serveStream(w, r, answer)
			return
		}
		n := m.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		status, out := answer(n, r.URL.Path, body)
		w.WriteHeader(status)
		w.Write(out)
	}))
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	m.srv.Config.Protocols = &p
	m.srv.Start()
	t.Cleanup(m.srv.Close)
	return m
}

// serveStream answers the calls of a call stream one by one.
func (m *member) serveStream(w http.ResponseWriter, r *http.Request, answer answerFunc) {
	rc := http.NewResponseController(w)
	w.WriteHeader(200)
	rc.Flush()
	br := bufio.NewReader(r.Body)
	for {
		frame, err := wire.ReadFrame(br, wire.MaxFrameBytes)
		if err != nil {
			return
		}
		var call wire.StreamCall
		if err := call.Decode(frame); err != nil {
			return
		}
		status, out := answer(m.calls.Add(1), call.Path, call.Body)
		if status == hangUp {
			return
		}
		reply := wire.StreamReply{ID: call.ID, Failed: status != 200, Body: out}
		if _, err := w.Write(wire.AppendFrame(nil, reply.Encode())); err != nil {
			return
		}
		rc.Flush()
	}
}

func (m *member) addr() string { return strings.TrimPrefix(m.srv.URL, "http://") }

func newClient(t *testing.T, cluster string, eps ...string) *Client {
	t.Helper()
	c, err := New(Config{Endpoints: eps, ClusterID: cluster, RequestTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ok(rev int64) (int, []byte) {
	return 200, (&wire.TxnResponse{Result: wire.TxnResult{Succeeded: true, Revision: rev}}).Encode()
}

func fail(code wire.Code, leader string) (int, []byte) {
	return wire.HTTPStatus(code), (&wire.Error{Code: code, Message: "scripted", Leader: leader}).Encode()
}

var put = wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: []byte("k"), Value: []byte("v")}}}

func TestWriteFollowsLeaderHint(t *testing.T) {
	leader := newMember(t, func(int64, string, []byte) (int, []byte) { return ok(7) })
	follower := newMember(t, func(int64, string, []byte) (int, []byte) { return fail(wire.CodeNotLeader, leader.addr()) })
	c := newClient(t, "c1", follower.addr())
	res, err := c.Txn(context.Background(), "", put)
	if err != nil || res.Revision != 7 {
		t.Fatalf("txn = %+v %v", res, err)
	}
	if c.Leader() != leader.addr() {
		t.Fatalf("leader = %q", c.Leader())
	}
	// Next writes go straight to the leader.
	if _, err := c.Txn(context.Background(), "", put); err != nil {
		t.Fatal(err)
	}
	if follower.calls.Load() != 1 || leader.calls.Load() != 2 {
		t.Fatalf("calls: follower %d leader %d", follower.calls.Load(), leader.calls.Load())
	}
}

func TestWriteWithUnknownOutcomeIsNotRetried(t *testing.T) {
	m := newMember(t, func(int64, string, []byte) (int, []byte) { return fail(wire.CodeUnknownOutcome, "") })
	other := newMember(t, func(int64, string, []byte) (int, []byte) { return ok(1) })
	c := newClient(t, "c1", m.addr(), other.addr())
	if _, err := c.Txn(context.Background(), "", put); !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("err = %v", err)
	}
	if m.calls.Load() != 1 || other.calls.Load() != 0 {
		t.Fatalf("retried: %d/%d", m.calls.Load(), other.calls.Load())
	}
}

func TestWriteSkipsUnreachableMember(t *testing.T) {
	// Nothing listens there: connection refused, nothing was sent.
	dead := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	m := newMember(t, func(int64, string, []byte) (int, []byte) { return ok(3) })
	c := newClient(t, "c1", dead, m.addr())
	if res, err := c.Txn(context.Background(), "", put); err != nil || res.Revision != 3 {
		t.Fatalf("txn = %+v %v", res, err)
	}
}

func TestReadsRetryUntilAvailable(t *testing.T) {
	m := newMember(t, func(n int64, path string, body []byte) (int, []byte) {
		if n <= 2 {
			return fail(wire.CodeUnavailable, "")
		}
		return 200, (&wire.GetResponse{Found: true, KV: wire.KV{Key: []byte("k"), Value: []byte("v"), CreateRevision: 1, ModRevision: 1}, Revision: 1}).Encode()
	})
	c := newClient(t, "c1", m.addr())
	kv, found, _, err := c.Get(context.Background(), "", []byte("k"), ReadOptions{})
	if err != nil || !found || string(kv.Value) != "v" {
		t.Fatalf("get = %+v %v %v", kv, found, err)
	}
	if m.calls.Load() < 3 {
		t.Fatalf("calls = %d", m.calls.Load())
	}
}

// TestReadsRetryUnknownOutcome: a member whose request to the leader broke
// on the way answers "outcome unknown"; for a read that is just a failed
// attempt, so the read, and the opening of a watch, go on to the next
// member instead of failing.
func TestReadsRetryUnknownOutcome(t *testing.T) {
	broken := newMember(t, func(int64, string, []byte) (int, []byte) { return fail(wire.CodeUnknownOutcome, "") })
	good := newMember(t, func(_ int64, path string, _ []byte) (int, []byte) {
		if path == wire.PathWatch {
			return 200, wire.AppendFrame(nil, (&wire.WatchFrame{Kind: wire.FrameProgress, Revision: 4}).Encode())
		}
		return 200, (&wire.GetResponse{Found: true, KV: wire.KV{Key: []byte("k"), Value: []byte("v"), CreateRevision: 1, ModRevision: 1}, Revision: 1}).Encode()
	})
	c := newClient(t, "c1", broken.addr(), good.addr())
	kv, found, _, err := c.Get(context.Background(), "", []byte("k"), ReadOptions{})
	if err != nil || !found || string(kv.Value) != "v" {
		t.Fatalf("get = %+v %v %v", kv, found, err)
	}
	s, start, err := c.openWatch(context.Background(), "", nil, 5)
	if err != nil {
		t.Fatalf("opening a watch: %v", err)
	}
	s.close()
	if start != 4 || broken.calls.Load() < 2 {
		t.Fatalf("watch started at %d; the broken member got %d calls", start, broken.calls.Load())
	}
}

func TestWrongClusterFailsFast(t *testing.T) {
	m := newMember(t, func(int64, string, []byte) (int, []byte) { return ok(1) })
	c := newClient(t, "other", m.addr())
	start := time.Now()
	if _, _, _, err := c.Get(context.Background(), "", []byte("k"), ReadOptions{}); !errors.Is(err, ErrWrongCluster) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("wrong cluster was retried")
	}
}

func TestClientValidatesBeforeSending(t *testing.T) {
	m := newMember(t, func(int64, string, []byte) (int, []byte) { return ok(1) })
	c := newClient(t, "c1", m.addr())
	if _, err := c.Txn(context.Background(), "", wire.Txn{Then: []wire.Op{{Type: wire.OpPut}}}); err == nil {
		t.Fatal("empty key accepted")
	}
	if _, err := c.Txn(context.Background(), "Bad", put); !errors.Is(err, wire.ErrBadNamespace) {
		t.Fatalf("bad namespace: %v", err)
	}
	if m.calls.Load() != 0 {
		t.Fatalf("invalid requests reached the member %d times", m.calls.Load())
	}
	if _, err := New(Config{ClusterID: "c1"}); err == nil {
		t.Fatal("client without endpoints")
	}
	c.Close()
	if _, err := c.Txn(context.Background(), "", put); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestFallsBackToPostsWithoutCallStreams(t *testing.T) {
	m := startMember(t, &member{noStreams: true}, func(int64, string, []byte) (int, []byte) { return ok(4) })
	c := newClient(t, "c1", m.addr())
	for range 3 {
		if res, err := c.Txn(context.Background(), "", put); err != nil || res.Revision != 4 {
			t.Fatalf("txn = %+v %v", res, err)
		}
	}
	if m.streamOpens.Load() != 1 || m.calls.Load() != 3 {
		t.Fatalf("stream opens %d, calls %d: want one refused stream, then POSTs", m.streamOpens.Load(), m.calls.Load())
	}
}

// A call stream that breaks after a write was sent leaves its outcome
// unknown (not retried); a read is retried on a new stream.
func TestBrokenCallStream(t *testing.T) {
	m := newMember(t, func(n int64, path string, body []byte) (int, []byte) {
		if n == 1 || n == 2 {
			return hangUp, nil
		}
		if path == wire.PathGet {
			return 200, (&wire.GetResponse{Found: true, KV: wire.KV{Key: []byte("k"), Value: []byte("v"), CreateRevision: 1, ModRevision: 1}, Revision: 1}).Encode()
		}
		return ok(5)
	})
	c := newClient(t, "c1", m.addr())
	if _, err := c.Txn(context.Background(), "", put); !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("write on a stream that broke: %v, want unknown outcome", err)
	}
	if m.calls.Load() != 1 {
		t.Fatalf("write was retried: %d calls", m.calls.Load())
	}
	kv, found, _, err := c.Get(context.Background(), "", []byte("k"), ReadOptions{})
	if err != nil || !found || string(kv.Value) != "v" {
		t.Fatalf("read after a broken stream: %+v %v %v", kv, found, err)
	}
	// Stream 1 broke on the write, stream 2 on the read's first try; the
	// retry (after a status call to rediscover the cluster) used stream 3.
	if m.streamOpens.Load() != 3 {
		t.Fatalf("stream opens %d: want the read retried on a new stream", m.streamOpens.Load())
	}
}
