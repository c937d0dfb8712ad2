package flaredb

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/fsm"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// The client API: HTTP/2 (mutual TLS, or h2c on loopback) carrying the
// binary messages of package wire. HTTP/2 multiplexes many concurrent calls
// and long-lived watch streams over one connection per client with flow
// control; the binary bodies are a few varints around the keys and values.
// Each call is a POST to its path, and the same calls can travel as frames
// on one long-lived call stream per client (stream.go), which is what the
// Go client uses: far less work per call than a new HTTP/2 request.
// gRPC would give the same transport with protobuf and a code generator;
// plain net/http keeps the server, the forwarding path and the fuzzed
// decoder in our hands with no generated code.

const (
	pathReadIndex = wire.PathReadIndex
	// maxRangeBytes bounds one range response; the client pages past it.
	maxRangeBytes = 16 << 20
	// compactChunk bounds the revisions one compact command discards.
	compactChunk = 10000
)

// errForward tells serve to forward the request to the leader.
var errForward = errors.New("forward to leader")

type handler func(ctx context.Context, body []byte) ([]byte, error)

// handlers are the request/answer calls of the API by path: served over
// HTTP (newHTTPServer) and in-process (Server.Call).
func (n *node) handlers() map[string]handler {
	return map[string]handler{
		wire.PathGet:            n.handleGet,
		wire.PathRange:          n.handleRange,
		wire.PathTxn:            n.handleTxn,
		wire.PathBatch:          n.handleBatch,
		wire.PathRevision:       n.handleRevision,
		wire.PathCompact:        n.handleCompact,
		wire.PathReadIndex:      n.handleReadIndex,
		wire.PathStatus:         n.handleStatus,
		wire.PathMemberAdd:      n.handleMemberAdd,
		wire.PathMemberRemove:   n.handleMemberRemove,
		wire.PathTransferLeader: n.handleTransfer,
	}
}

func (n *node) newHTTPServer() *http.Server {
	mux := http.NewServeMux()
	for path, h := range n.handlers() {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) { n.serve(w, r, h) })
	}
	mux.HandleFunc("POST "+wire.PathWatch, n.handleWatch)
	mux.HandleFunc("POST "+wire.PathSnapshot, n.handleSnapshot)
	mux.HandleFunc("POST "+wire.PathStream, n.handleStream)

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           mux,
		Protocols:         &protocols,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 4096, MaxReadFrameSize: 1 << 20},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
}

// prelude checks what every request must carry and reads the body. It
// writes the error and returns ok=false if the request is refused.
func (n *node) prelude(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if err := n.checkRequest(r); err != nil {
		n.writeError(w, err)
		return nil, false
	}
	body, err := readRequestBody(w, r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			n.writeError(w, wire.Errorf(wire.CodeRequestTooLarge, "body exceeds %d bytes", wire.MaxRequestBytes))
		} else {
			n.writeError(w, wire.Errorf(wire.CodeMalformed, "reading body: %v", err))
		}
		return nil, false
	}
	return body, true
}

// checkRequest checks the headers every request must carry, and that the
// member is not stopping.
func (n *node) checkRequest(r *http.Request) *wire.Error {
	if got := r.Header.Get(wire.HeaderCluster); got != n.cfg.ClusterID {
		return wire.Errorf(wire.CodeWrongCluster, "request for cluster %q reached member %q of cluster %q", got, n.cfg.ID, n.cfg.ClusterID)
	}
	if ct := r.Header.Get("Content-Type"); ct != wire.ContentType {
		return wire.Errorf(wire.CodeMalformed, "content type %q, want %s", ct, wire.ContentType)
	}
	if n.stopping.Load() {
		return n.errStopping()
	}
	return nil
}

// errStopping is the answer to anything that reaches a stopping member:
// nothing was done, so the client retries elsewhere.
func (n *node) errStopping() *wire.Error {
	return wire.Errorf(wire.CodeShuttingDown, "member %q is stopping", n.cfg.ID)
}

// readRequestBody reads a request body of at most wire.MaxRequestBytes: in
// one allocation when the client sent its length (ours always does).
func readRequestBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= wire.MaxRequestBytes {
		body := make([]byte, n)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, err
		}
		return body, nil
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, wire.MaxRequestBytes))
}

// Response header values, shared read-only by every response.
var (
	contentTypeHdr = []string{wire.ContentType}
)

// setContentType sets the content type of an answer and leaves out the
// Date header nobody reads (formatting it is a measurable cost per call).
func setContentType(h http.Header) {
	h["Content-Type"] = contentTypeHdr
	h["Date"] = nil
}

// serve runs a handler. Handlers decode (and so validate) the request
// first; one that only the leader may run returns errForward on a follower,
// so malformed input is refused by the first member it reaches.
func (n *node) serve(w http.ResponseWriter, r *http.Request, h handler) {
	body, ok := n.prelude(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.RequestTimeout)
	defer cancel()
	resp, err := h(ctx, body)
	if errors.Is(err, errForward) {
		n.forward(w, r, body)
		return
	}
	if err != nil {
		n.writeError(w, err)
		return
	}
	setContentType(w.Header())
	_, _ = w.Write(resp)
}

func (n *node) writeError(w http.ResponseWriter, err error) {
	we := wire.ToError(err)
	if we.Code == wire.CodeNotLeader && we.Leader != "" {
		w.Header().Set(wire.HeaderLeader, we.Leader)
	}
	setContentType(w.Header())
	w.WriteHeader(wire.HTTPStatus(we.Code))
	_, _ = w.Write(we.Encode())
}

// forward relays a request the leader must handle and its answer. A request
// that was itself forwarded is not forwarded again.
func (n *node) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.Header.Get(wire.HeaderForwarded) != "" {
		n.writeError(w, n.notLeader())
		return
	}
	_, api := n.leaderAPI()
	if api == "" {
		n.writeError(w, n.notLeader())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.scheme+"://"+api+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		n.writeError(w, wire.Errorf(wire.CodeInternal, "forward: %v", err))
		return
	}
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set(wire.HeaderCluster, n.cfg.ClusterID)
	req.Header.Set(wire.HeaderForwarded, n.cfg.ID)
	n.stats.forwarded.Add(1)
	resp, err := n.peers.Do(req)
	if err != nil {
		n.writeError(w, peerError(api, err))
		return
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxFrameBytes))
	if err != nil {
		n.writeError(w, wire.Errorf(wire.CodeUnknownOutcome, "forwarded to leader %s, reading its answer: %v", api, err))
		return
	}
	w.Header().Set("Content-Type", wire.ContentType)
	w.Header().Set(wire.HeaderLeader, api)
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
}

// peerError maps a transport failure talking to another member. A failure
// to connect means nothing was sent; anything later leaves the outcome of a
// write unknown.
func peerError(addr string, err error) *wire.Error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return wire.Errorf(wire.CodeNoLeader, "cannot reach the leader at %s: %v", addr, err)
	}
	return wire.Errorf(wire.CodeUnknownOutcome, "talking to the leader at %s: %v", addr, err)
}

func newPeerClient(timeout time.Duration) *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:           &protocols,
		DialContext:         (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		HTTP2:               &http.HTTP2Config{MaxReadFrameSize: 1 << 20},
	}}
}

// callPeer sends one request to another member's API and returns the
// response body, or the member's error. It is marked as forwarded, so the
// receiver does not pass it on.
func (n *node) callPeer(ctx context.Context, addr, path string, body []byte) ([]byte, error) {
	return n.callMember(ctx, addr, path, body, true)
}

// callMember is callPeer with the forwarded mark optional: a request that
// may be forwarded to the leader (a join) goes out unmarked.
func (n *node) callMember(ctx context.Context, addr, path string, body []byte, forwarded bool) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.scheme+"://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set(wire.HeaderCluster, n.cfg.ClusterID)
	if forwarded {
		req.Header.Set(wire.HeaderForwarded, n.cfg.ID)
	}
	resp, err := n.peers.Do(req)
	if err != nil {
		return nil, peerError(addr, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxFrameBytes))
	if err != nil {
		return nil, wire.Errorf(wire.CodeUnknownOutcome, "reading the answer of %s: %v", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		we, derr := wire.DecodeError(out)
		if derr != nil {
			return nil, wire.Errorf(wire.CodeUnavailable, "%s answered %s with an undecodable body", addr, resp.Status)
		}
		return nil, we
	}
	return out, nil
}

// Handlers. Keys inside the store are raw (namespace + 0x00 + key); every
// handler maps them back to user keys before answering.

func stripKV(ns string, kv *wire.KV) {
	kv.Key = kv.Key[len(ns)+1:]
}

func rawTxn(ns string, t wire.Txn) wire.Txn {
	out := wire.Txn{If: make([]wire.Compare, len(t.If))}
	for i, c := range t.If {
		c.Key = wire.RawKey(ns, c.Key)
		if c.Target == wire.CompareRangeEmpty {
			// Both ends carry the namespace's prefix, so the range
			// stays inside it and keeps its order.
			c.RangeEnd = wire.RawKey(ns, c.RangeEnd)
		}
		out.If[i] = c
	}
	conv := func(ops []wire.Op) []wire.Op {
		r := make([]wire.Op, len(ops))
		for i, op := range ops {
			op.Key = wire.RawKey(ns, op.Key)
			r[i] = op
		}
		return r
	}
	out.Then, out.Else = conv(t.Then), conv(t.Else)
	return out
}

func stripResult(ns string, r *wire.TxnResult) {
	for i := range r.Results {
		if len(r.Results[i].KV.Key) > 0 {
			stripKV(ns, &r.Results[i].KV)
		}
	}
}

func (n *node) consistent(ctx context.Context, c wire.Consistency) error {
	if c == wire.Stale {
		return nil
	}
	return n.linearize(ctx)
}

func (n *node) handleGet(ctx context.Context, body []byte) ([]byte, error) {
	var req wire.GetRequest
	if err := req.Decode(body); err != nil {
		return nil, err
	}
	if err := n.consistent(ctx, req.Consistency); err != nil {
		return nil, err
	}
	return n.getLocal(&req)
}

// getLocal serves a point read from local state.
func (n *node) getLocal(req *wire.GetRequest) ([]byte, error) {
	kv, found, rev, err := n.fsm.Get(wire.RawKey(req.Namespace, req.Key), req.Revision)
	if err != nil {
		return nil, err
	}
	resp := wire.GetResponse{Found: found, Revision: rev}
	if found {
		resp.KV = kv
		stripKV(req.Namespace, &resp.KV)
	}
	return resp.Encode(), nil
}

func (n *node) handleRange(ctx context.Context, body []byte) ([]byte, error) {
	var req wire.RangeRequest
	if err := req.Decode(body); err != nil {
		return nil, err
	}
	if err := n.consistent(ctx, req.Consistency); err != nil {
		return nil, err
	}
	start, end := wire.RawRange(req.Namespace, req.Start, req.End)
	kvs, rev, more, err := n.fsm.Range(ctx, start, end, fsm.RangeOptions{
		Limit: int(min(max(req.Limit, 0), 1<<30)), MaxBytes: maxRangeBytes, Revision: req.Revision, Reverse: req.Reverse,
	})
	if err != nil {
		return nil, err
	}
	for i := range kvs {
		stripKV(req.Namespace, &kvs[i])
	}
	return (&wire.RangeResponse{KVs: kvs, Revision: rev, More: more}).Encode(), nil
}

func (n *node) handleTxn(ctx context.Context, body []byte) ([]byte, error) {
	var req wire.TxnRequest
	if err := req.Decode(body); err != nil {
		return nil, err
	}
	t := rawTxn(req.Namespace, req.Txn)
	var res wire.TxnResult
	var err error
	if !t.HasWrites() {
		if err := n.linearize(ctx); err != nil {
			return nil, err
		}
		res, err = n.fsm.ReadTxn(&t)
	} else {
		if err := n.leaderOnly(); err != nil {
			return nil, err
		}
		res, err = n.propose(ctx, t, len(body))
	}
	if err != nil {
		return nil, err
	}
	stripResult(req.Namespace, &res)
	return (&wire.TxnResponse{Result: res}).Encode(), nil
}

// batchItem is one call of a client batch.
type batchItem struct {
	get    *wire.GetRequest
	ns     string
	txn    wire.Txn // raw keys
	write  bool
	linear bool // needs the batch's read index
	prop   *proposal
	resp   []byte // the encoded answer, set once known
}

// handleBatch serves a client batch (wire.PathBatch): the calls are
// independent and were concurrent at the client, so their writes are
// proposed together (one log entry) and one read index serves every
// linearizable read. A batch with writes is forwarded whole when this
// member does not lead. Each call's error is answered in its slot.
func (n *node) handleBatch(ctx context.Context, body []byte) ([]byte, error) {
	raw, err := wire.DecodeBatch(wire.TagBatchRequest, body)
	if err != nil {
		return nil, err
	}
	items := make([]batchItem, len(raw))
	var writes, linear bool
	for i, b := range raw {
		it := &items[i]
		tag, err := wire.PeekTag(b)
		if err != nil {
			it.resp = wire.ToError(err).Encode()
			continue
		}
		switch tag {
		case wire.TagGetRequest:
			req := new(wire.GetRequest)
			if err := req.Decode(b); err != nil {
				it.resp = wire.ToError(err).Encode()
				continue
			}
			it.get, it.linear = req, req.Consistency != wire.Stale
		case wire.TagTxnRequest:
			var req wire.TxnRequest
			if err := req.Decode(b); err != nil {
				it.resp = wire.ToError(err).Encode()
				continue
			}
			it.ns, it.txn = req.Namespace, rawTxn(req.Namespace, req.Txn)
			it.write = it.txn.HasWrites()
			it.linear = !it.write
			if it.write {
				it.prop = &proposal{ctx: ctx, txn: it.txn, size: len(b), done: make(chan proposalResult, 1)}
			}
		default:
			it.resp = wire.Errorf(wire.CodeMalformed, "a batch carries get and txn requests, not %s", tag).Encode()
			continue
		}
		writes = writes || it.write
		linear = linear || it.linear
	}
	if writes {
		if err := n.leaderOnly(); err != nil {
			return nil, err
		}
		var head, tail *proposal
		for i := range items {
			if p := items[i].prop; p != nil {
				if head == nil {
					head = p
				} else {
					tail.next = p
				}
				tail = p
			}
		}
		if err := n.handOver(ctx, head); err != nil {
			enc := wire.ToError(err).Encode()
			for i := range items {
				if items[i].prop != nil {
					items[i].prop, items[i].resp = nil, enc
				}
			}
		}
	}
	if linear {
		if err := n.linearize(ctx); err != nil {
			enc := wire.ToError(err).Encode()
			for i := range items {
				if items[i].linear && items[i].resp == nil {
					items[i].resp = enc
				}
			}
		}
	}
	out := make([][]byte, len(items))
	for i := range items {
		it := &items[i]
		switch {
		case it.resp != nil:
		case it.get != nil:
			it.resp, err = n.getLocal(it.get)
		case it.prop != nil:
			r := <-it.prop.done
			if r.err == nil {
				stripResult(it.ns, &r.res)
				it.resp = (&wire.TxnResponse{Result: r.res}).Encode()
			}
			err = r.err
		default: // read-only transaction
			var res wire.TxnResult
			res, err = n.fsm.ReadTxn(&it.txn)
			if err == nil {
				stripResult(it.ns, &res)
				it.resp = (&wire.TxnResponse{Result: res}).Encode()
			}
		}
		if err != nil {
			it.resp = wire.ToError(err).Encode()
			err = nil
		}
		out[i] = it.resp
	}
	return wire.EncodeBatch(wire.TagBatchResponse, out), nil
}

func (n *node) handleRevision(ctx context.Context, body []byte) ([]byte, error) {
	var req wire.RevisionRequest
	if err := req.Decode(body); err != nil {
		return nil, err
	}
	if err := n.consistent(ctx, req.Consistency); err != nil {
		return nil, err
	}
	cur, comp := n.fsm.Revision()
	return (&wire.RevisionResponse{Current: cur, Compacted: comp}).Encode(), nil
}

// leaderOnly returns errForward unless this member leads.
func (n *node) leaderOnly() error {
	if n.raft.State() != raft.Leader {
		return errForward
	}
	return nil
}

func (n *node) handleCompact(ctx context.Context, body []byte) ([]byte, error) {
	var req wire.CompactRequest
	if err := req.Decode(body); err != nil {
		return nil, err
	}
	if err := n.leaderOnly(); err != nil {
		return nil, err
	}
	if err := n.compact(req.Revision); err != nil {
		return nil, err
	}
	return wire.EncodeAck(), nil
}

// compact discards history below rev in steps of compactChunk revisions,
// so no single command holds up the state machine for long.
func (n *node) compact(rev int64) error {
	_, comp := n.fsm.Revision()
	for step := comp + 1 + compactChunk; step < rev; step += compactChunk {
		if err := n.applyCommand(fsm.Command{Kind: fsm.CmdCompact, Revision: step}); err != nil {
			return err
		}
	}
	return n.applyCommand(fsm.Command{Kind: fsm.CmdCompact, Revision: rev})
}

func (n *node) handleReadIndex(ctx context.Context, body []byte) ([]byte, error) {
	if err := wire.DecodeEmpty(wire.TagReadIndexRequest, body); err != nil {
		return nil, err
	}
	if n.raft.State() != raft.Leader {
		return nil, n.notLeader()
	}
	idx, err := n.readIndex(ctx)
	if err != nil {
		return nil, err
	}
	return (&wire.ReadIndexResponse{Index: idx}).Encode(), nil
}

func (n *node) handleStatus(ctx context.Context, body []byte) ([]byte, error) {
	if err := wire.DecodeEmpty(wire.TagStatusRequest, body); err != nil {
		return nil, err
	}
	return (&wire.StatusResponse{Status: n.status()}).Encode(), nil
}

func (n *node) handleMemberAdd(ctx context.Context, body []byte) ([]byte, error) {
	var req wire.MemberAddRequest
	if err := req.Decode(body); err != nil {
		return nil, err
	}
	if err := n.leaderOnly(); err != nil {
		return nil, err
	}
	if err := n.addMember(req.Member); err != nil {
		return nil, err
	}
	return wire.EncodeAck(), nil
}

func (n *node) handleMemberRemove(ctx context.Context, body []byte) ([]byte, error) {
	var req wire.MemberRemoveRequest
	if err := req.Decode(body); err != nil {
		return nil, err
	}
	if err := n.leaderOnly(); err != nil {
		return nil, err
	}
	if err := n.removeMember(req.ID); err != nil {
		return nil, err
	}
	return wire.EncodeAck(), nil
}

func (n *node) handleTransfer(ctx context.Context, body []byte) ([]byte, error) {
	var req wire.TransferLeaderRequest
	if err := req.Decode(body); err != nil {
		return nil, err
	}
	if err := n.leaderOnly(); err != nil {
		return nil, err
	}
	if err := n.transferLeadership(req.ID); err != nil {
		return nil, err
	}
	return wire.EncodeAck(), nil
}

// handleSnapshot streams a point-in-time snapshot of the state machine,
// taken after a read index so it holds every acknowledged write.
func (n *node) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	body, ok := n.prelude(w, r)
	if !ok {
		return
	}
	if err := wire.DecodeEmpty(wire.TagSnapshotRequest, body); err != nil {
		n.writeError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.RequestTimeout)
	err := n.linearize(ctx)
	cancel()
	if err != nil {
		n.writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := n.fsm.WriteSnapshot(w); err != nil {
		n.log.Warn("streaming snapshot failed", "err", err)
		// The stream's checksum trailer is missing: the reader sees a
		// truncated snapshot and refuses it.
		panic(http.ErrAbortHandler)
	}
}
