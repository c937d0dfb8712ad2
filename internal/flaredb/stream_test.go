package flaredb_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// rawStream is a call stream opened by hand (h2c), so tests can send any
// frame, bypassing the client.
type rawStream struct {
	body    *io.PipeWriter
	replies *bufio.Reader
	resp    *http.Response
}

func openRawStream(t *testing.T, addr, cluster string) *rawStream {
	t.Helper()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: &p, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}}
	t.Cleanup(hc.CloseIdleConnections)
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+wire.PathStream, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set(wire.HeaderCluster, cluster)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pw.Close(); resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		out, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream answered %s: %q", resp.Status, out)
	}
	return &rawStream{body: pw, replies: bufio.NewReader(resp.Body), resp: resp}
}

func (s *rawStream) send(t *testing.T, frame []byte) {
	t.Helper()
	if _, err := s.body.Write(frame); err != nil {
		t.Fatal(err)
	}
}

func (s *rawStream) call(t *testing.T, id uint64, path string, body []byte) {
	t.Helper()
	c := wire.StreamCall{ID: id, Path: path, Body: body}
	s.send(t, wire.AppendFrame(nil, c.Encode()))
}

func (s *rawStream) recv() (wire.StreamReply, error) {
	frame, err := wire.ReadFrame(s.replies, wire.MaxFrameBytes+1024)
	if err != nil {
		return wire.StreamReply{}, err
	}
	var r wire.StreamReply
	return r, r.Decode(frame)
}

// TestCallStream drives a call stream to a follower by hand: a write is
// forwarded to the leader and names it, reads and errors come back under
// their call IDs, and a frame that is not a call ends the stream after
// the calls before it are answered, with nothing written by the bad ones.
func TestCallStream(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{})
	leader := c.WaitLeader()
	follower := (leader + 1) % 3
	ctx := context.Background()
	before, _, err := c.Client().Revision(ctx, false)
	if err != nil {
		t.Fatal(err)
	}

	s := openRawStream(t, c.Members[follower].APIAddr, c.ID)
	put := (&wire.TxnRequest{Txn: wire.Txn{Then: []wire.Op{putOp("k", "v")}}}).Encode()
	s.call(t, 1, wire.PathTxn, put)
	r, err := s.recv()
	if err != nil || r.ID != 1 || r.Failed {
		t.Fatalf("put: %+v %v", r, err)
	}
	if r.Leader != c.Members[leader].APIAddr {
		t.Errorf("forwarded put names leader %q, want %q", r.Leader, c.Members[leader].APIAddr)
	}

	bigKey := (&wire.TxnRequest{Txn: wire.Txn{Then: []wire.Op{{Type: wire.OpPut, Key: make([]byte, 1<<20)}}}}).Encode()
	s.call(t, 2, wire.PathGet, (&wire.GetRequest{Key: []byte("k")}).Encode())
	s.call(t, 3, "/flaredb/v1/nope", nil)
	s.call(t, 4, wire.PathTxn, bigKey)
	s.call(t, 5, wire.PathTxn, []byte("garbage"))
	want := map[uint64]wire.Code{3: wire.CodeMalformed, 4: wire.CodeKeyTooLarge, 5: wire.CodeVersion}
	for range 4 {
		r, err := s.recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.ID == 2 {
			var g wire.GetResponse
			if r.Failed || g.Decode(r.Body) != nil || !g.Found || string(g.KV.Value) != "v" {
				t.Errorf("get on the stream: %+v", r)
			}
			continue
		}
		we, err := wire.DecodeError(r.Body)
		if !r.Failed || err != nil || we.Code != want[r.ID] {
			t.Errorf("call %d: failed=%v %v %v, want code %v", r.ID, r.Failed, we, err, want[r.ID])
		}
		delete(want, r.ID)
	}
	if len(want) != 0 {
		t.Errorf("unanswered calls: %v", want)
	}

	// A frame that is not a call: the framing is lost, the stream ends.
	s.send(t, wire.AppendFrame(nil, []byte("not a call")))
	if r, err := s.recv(); err == nil {
		t.Fatalf("stream went on after a bad frame: %+v", r)
	}
	after, _, err := c.Client().Revision(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if after != before+1 {
		t.Errorf("revision %d -> %d: want exactly the one good put", before, after)
	}
}

// TestCallStreamRefusals: a stream is refused like any request when the
// cluster is wrong, and over HTTP/1.1, where calls could not overlap.
func TestCallStreamRefusals(t *testing.T) {
	c := flaredbtest.StartCluster(t, 1, flaredbtest.Options{})
	addr := c.Members[c.WaitLeader()].APIAddr

	status, out := rawPost(t, addr, wire.PathStream, "another", nil, nil)
	if we, err := wire.DecodeError(out); status != 403 || err != nil || we.Code != wire.CodeWrongCluster {
		t.Errorf("wrong cluster: %d %v %v", status, we, err)
	}

	req, err := http.NewRequest(http.MethodPost, "http://"+addr+wire.PathStream, strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set(wire.HeaderCluster, c.ID)
	resp, err := http.DefaultClient.Do(req) // HTTP/1.1
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ = io.ReadAll(resp.Body)
	if we, err := wire.DecodeError(out); resp.StatusCode != 400 || err != nil || we.Code != wire.CodeMalformed || !strings.Contains(we.Message, "HTTP/2") {
		t.Errorf("HTTP/1.1 stream: %s %v %v", resp.Status, we, err)
	}
}

// TestCallStreamEndsOnStop: stopping a member ends its call streams, and a
// client's next call goes to another member.
func TestCallStreamEndsOnStop(t *testing.T) {
	c := flaredbtest.StartCluster(t, 3, flaredbtest.Options{})
	leader := c.WaitLeader()
	follower := (leader + 1) % 3
	s := openRawStream(t, c.Members[follower].APIAddr, c.ID)
	s.call(t, 1, wire.PathRevision, (&wire.RevisionRequest{Consistency: wire.Stale}).Encode())
	if r, err := s.recv(); err != nil || r.Failed {
		t.Fatalf("revision: %+v %v", r, err)
	}
	done := make(chan error, 1)
	go func() { _, err := s.recv(); done <- err }()
	c.Stop(follower)
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a reply after stop")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream still open 10s after the member stopped")
	}
	cl := c.Client()
	if _, err := cl.Txn(context.Background(), "", wire.Txn{Then: []wire.Op{putOp("after", "stop")}}); err != nil {
		t.Fatalf("write after a member stopped: %v", err)
	}
}
