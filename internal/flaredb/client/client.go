// Package client is the Go client of flaredb: calls to any member with
// automatic leader discovery, retries of idempotent calls, resumable watches,
// and Store, a storage.Store on top of it, so in cluster mode every component
// keeps its resources in flaredb through the same interface as the embedded
// store.
//
// Retry rules: reads, watches and status calls are retried on another member
// (or later) on any transport error and on retryable error codes, until the
// call's context ends (or Config.RequestTimeout when the context has no
// deadline). Writes are retried only when the failure proves they were not
// applied: the connection could not be made, or the member answered with a
// code wire.NotApplied reports (not the leader, no leader, shutting down).
// Otherwise a write fails with an error wrapping wire.ErrUnknownOutcome and
// the caller decides (for example by re-reading and retrying a CAS).
//
// It owns HTTP connections to the members and the goroutine of each watch;
// Close releases them. It also holds what clients and members share about a
// cluster's shape (Peer, the single-node addresses), for the operator CLI,
// which may not import the server. It must not import the server or hold
// process-wide state.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// contentType is the Content-Type header's value, shared read-only by every
// request.
var contentType = []string{wire.ContentType}

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("flaredb: client closed")

// Re-exported sentinels, for callers that only import the client.
var (
	ErrNotLeader      = wire.ErrNotLeader
	ErrNoLeader       = wire.ErrNoLeader
	ErrUnknownOutcome = wire.ErrUnknownOutcome
	ErrWrongCluster   = wire.ErrWrongCluster
)

// Config configures a client.
type Config struct {
	// Endpoints are API addresses (host:port) of some members; the client
	// learns the others from them. The first is preferred for stale reads.
	Endpoints []string
	// ClusterID must match the members' cluster ID.
	ClusterID string
	// RequestTimeout bounds a call whose context has no deadline, retries
	// included (default 30s).
	RequestTimeout time.Duration
	// DialTimeout bounds connecting to one member (default 2s).
	DialTimeout time.Duration
	// Logger receives retry and watch-resume messages; nil discards them.
	Logger *slog.Logger
	// TLS, when set, makes the client speak HTTP/2 over TLS: it verifies
	// the members against TLS.RootCAs and presents TLS.Certificates (the
	// members require a certificate signed by the cluster CA). Without TLS
	// and without CAFile the client speaks h2c (plaintext; members accept
	// it only when they run with allowPlaintext).
	TLS *tls.Config
	// CAFile, CertFile and KeyFile are the PEM files to build TLS from
	// when TLS is nil: the cluster CA, and this client's certificate and
	// key signed by it.
	CAFile, CertFile, KeyFile string
	// Local, when set, serves calls to the endpoint LocalEndpoint
	// in-process instead of over HTTP: the node wiring passes its own
	// member's Server.Call. Snapshots still use HTTP.
	Local         LocalFunc
	LocalEndpoint string
	// LocalWatch, when set, opens watch streams to LocalEndpoint
	// in-process (flaredb.Server.Watch).
	LocalWatch func(ctx context.Context, body []byte) (io.ReadCloser, error)
}

// LocalFunc serves one encoded API call in-process (flaredb.Server.Call):
// the encoded answer, or an error that wire.ToError maps to its code.
type LocalFunc func(ctx context.Context, path string, body []byte) ([]byte, error)

// Client talks to a flaredb cluster. It is safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client
	// scheme is "https" with TLS, else "http" (h2c).
	scheme string
	log    *slog.Logger

	mu        sync.Mutex
	endpoints []string
	leader    string

	batches batcher
	streams streams
	// clusterHdr is the cluster header's value, shared read-only by every
	// request.
	clusterHdr []string

	closed atomic.Bool
	// root is cancelled by Close; it ends watches and waits.
	root       context.Context
	rootCancel context.CancelFunc
	watches    sync.WaitGroup
}

// New returns a client. It validates cfg and does no I/O.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("flaredb: client: no endpoints")
	}
	for _, e := range cfg.Endpoints {
		if _, _, err := net.SplitHostPort(e); err != nil {
			return nil, fmt.Errorf("flaredb: client: endpoint %q is not host:port", e)
		}
	}
	if cfg.ClusterID == "" {
		return nil, errors.New("flaredb: client: empty cluster ID")
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tlsCfg, err := clientTLS(cfg)
	if err != nil {
		return nil, err
	}
	var protocols http.Protocols
	if tlsCfg != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	tr := &http.Transport{
		Protocols:           &protocols,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: cfg.DialTimeout,
		DialContext:         (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		HTTP2: &http.HTTP2Config{
			MaxReadFrameSize: 1 << 20,
			// Detect dead members on idle watch connections.
			PingTimeout:     5 * time.Second,
			SendPingTimeout: 10 * time.Second,
		},
	}
	c := &Client{
		cfg:       cfg,
		http:      &http.Client{Transport: tr},
		scheme:    "http",
		log:       cfg.Logger.With("component", "flaredb-client"),
		endpoints: slices.Clone(cfg.Endpoints),
	}
	if tlsCfg != nil {
		c.scheme = "https"
	}
	c.clusterHdr = []string{cfg.ClusterID}
	c.root, c.rootCancel = context.WithCancel(context.Background())
	return c, nil
}

// Close ends every watch and releases connections. Later calls fail with
// ErrClosed.
func (c *Client) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	c.rootCancel()
	c.closeStreams()
	c.watches.Wait()
	c.http.CloseIdleConnections()
	return nil
}

// Leader returns the API address the client currently believes leads.
func (c *Client) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

func (c *Client) setLeader(addr string) {
	if addr == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leader = addr
	if !slices.Contains(c.endpoints, addr) {
		c.endpoints = append(c.endpoints, addr)
	}
}

func (c *Client) addEndpoints(addrs ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range addrs {
		if a != "" && !slices.Contains(c.endpoints, a) {
			c.endpoints = append(c.endpoints, a)
		}
	}
}

// order returns the endpoints to try: the leader first (or the first
// configured endpoint for local reads), then the rest.
func (c *Client) order(local bool) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	first := c.leader
	if local || first == "" {
		first = c.cfg.Endpoints[0]
	}
	out := make([]string, 0, len(c.endpoints)+1)
	out = append(out, first)
	for _, e := range c.endpoints {
		if e != first {
			out = append(out, e)
		}
	}
	return out
}

// callKind says how a call may be retried and routed.
type callKind int

const (
	// read: idempotent, served by any member.
	read callKind = iota
	// local: idempotent, preferably served by the first endpoint (stale
	// reads, status of a member).
	local
	// write: not idempotent; retried only when not applied.
	write
)

// withTimeout applies RequestTimeout when ctx has no deadline.
func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.cfg.RequestTimeout)
}

// call sends body to path, trying members per the retry rules.
func (c *Client) call(ctx context.Context, path string, body []byte, kind callKind) ([]byte, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	backoff := 10 * time.Millisecond
	var lastErr error
	for attempt := 0; ; attempt++ {
		tried := map[string]bool{}
		queue := c.order(kind == local)
		for len(queue) > 0 {
			ep := queue[0]
			queue = queue[1:]
			if tried[ep] {
				continue
			}
			tried[ep] = true
			out, leaderHint, err := c.do(ctx, ep, path, body)
			if err == nil {
				if kind == write {
					if leaderHint != "" {
						c.setLeader(leaderHint)
					} else {
						c.setLeader(ep)
					}
				}
				return out, nil
			}
			lastErr = err
			var we *wire.Error
			switch {
			case errors.As(err, &we):
				if we.Code == wire.CodeNotLeader && we.Leader != "" {
					c.setLeader(we.Leader)
					if !tried[we.Leader] {
						queue = append([]string{we.Leader}, queue...)
					}
				}
				if !retryable(kind, we.Code) {
					return nil, err
				}
			case isDialError(err):
				// Nothing was sent: safe for any call.
			case kind == write:
				return nil, fmt.Errorf("%w: %v", wire.ErrUnknownOutcome, err)
			}
			if ctx.Err() != nil {
				return nil, c.timeoutErr(ctx, lastErr)
			}
			c.log.Debug("call failed; trying another member", "endpoint", ep, "path", path, "err", err)
		}
		if attempt == 0 {
			c.discover(ctx)
		}
		select {
		case <-ctx.Done():
			return nil, c.timeoutErr(ctx, lastErr)
		case <-c.root.Done():
			return nil, ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

func (c *Client) timeoutErr(ctx context.Context, last error) error {
	if last == nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w (last error: %w)", ctx.Err(), last)
}

// isDialError reports whether err proves the call never reached the
// member: the connection could not be made, or a call stream failed
// before the call was handed to it.
func isDialError(err error) bool {
	var oe *net.OpError
	var ns *errNotSent
	return errors.As(err, &ns) || (errors.As(err, &oe) && oe.Op == "dial")
}

// do sends one request to one member. A member's error comes back as a
// *wire.Error; leaderHint is the leader named by a forwarding member.
func (c *Client) do(ctx context.Context, ep, path string, body []byte) (out []byte, leaderHint string, err error) {
	if c.cfg.Local != nil && ep == c.cfg.LocalEndpoint {
		out, err := c.cfg.Local(ctx, path, body)
		if err != nil {
			return nil, "", wire.ToError(err)
		}
		return out, "", nil
	}
	if out, hint, err, ok := c.doStream(ctx, ep, path, body); ok {
		return out, hint, err
	}
	resp, err := c.post(ctx, ep, path, body)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	out, err = readBody(resp)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", responseError(ep, resp, out)
	}
	return out, resp.Header.Get(wire.HeaderLeader), nil
}

// readBody reads a response body of at most wire.MaxFrameBytes (one
// allocation when the member sent its length, as it does for every
// answer but a stream).
func readBody(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= wire.MaxFrameBytes {
		out := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, out); err != nil {
			return nil, err
		}
		return out, nil
	}
	return io.ReadAll(io.LimitReader(resp.Body, wire.MaxFrameBytes+1))
}

func (c *Client) post(ctx context.Context, ep, path string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.scheme+"://"+ep+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	// Canonical names, set directly: no per-request canonicalization.
	req.Header["Content-Type"] = contentType
	req.Header[wire.HeaderCluster] = c.clusterHdr
	return c.http.Do(req)
}

func responseError(ep string, resp *http.Response, body []byte) error {
	we, err := wire.DecodeError(body)
	if err != nil {
		return &wire.Error{Code: wire.CodeUnavailable, Message: fmt.Sprintf("%s: %s answered %s without a flaredb error", wire.ErrUnavailable, ep, resp.Status)}
	}
	if we.Leader == "" {
		we.Leader = resp.Header.Get(wire.HeaderLeader)
	}
	return we
}

// discover asks members for the cluster's status and learns the leader and
// every member's API address.
func (c *Client) discover(ctx context.Context) {
	for _, ep := range c.order(false) {
		dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		out, _, err := c.do(dctx, ep, wire.PathStatus, wire.EncodeEmpty(wire.TagStatusRequest))
		cancel()
		if err != nil {
			continue
		}
		var st wire.StatusResponse
		if st.Decode(out) != nil {
			continue
		}
		for _, m := range st.Status.Members {
			c.addEndpoints(m.APIAddress)
		}
		if st.Status.Leader.APIAddress != "" {
			c.setLeader(st.Status.Leader.APIAddress)
			return
		}
	}
}

// ReadOptions tune a read.
type ReadOptions struct {
	// Revision reads as of a past revision (0: latest).
	Revision int64
	// Stale serves the read from the member's local state without
	// confirming it is current (faster, may lag; works without a leader).
	Stale bool
}

func consistency(stale bool) wire.Consistency {
	if stale {
		return wire.Stale
	}
	return wire.Linearizable
}

func readKind(stale bool) callKind {
	if stale {
		return local
	}
	return read
}

// Get reads key in namespace ns. found is false if it does not exist; rev is
// the store revision the read saw.
func (c *Client) Get(ctx context.Context, ns string, key []byte, o ReadOptions) (kv wire.KV, found bool, rev int64, err error) {
	req := wire.GetRequest{Namespace: ns, Key: key, Revision: o.Revision, Consistency: consistency(o.Stale)}
	var out []byte
	if o.Stale {
		out, err = c.call(ctx, wire.PathGet, req.Encode(), local)
	} else {
		out, err = c.callBatched(ctx, wire.PathGet, req.Encode(), read)
	}
	if err != nil {
		return wire.KV{}, false, 0, fmt.Errorf("flaredb: get: %w", err)
	}
	var resp wire.GetResponse
	if err := resp.Decode(out); err != nil {
		return wire.KV{}, false, 0, fmt.Errorf("flaredb: get: response: %w", err)
	}
	return resp.KV, resp.Found, resp.Revision, nil
}

// RangeOptions tune a range read.
type RangeOptions struct {
	ReadOptions
	// Limit is the most keys returned (0: no limit).
	Limit int
	// Reverse returns keys in descending order.
	Reverse bool
}

// Range reads keys in [start, end) of namespace ns (end nil: to the end of
// the namespace), paging through the server's response size limit at one
// revision, so the result is one consistent snapshot.
func (c *Client) Range(ctx context.Context, ns string, start, end []byte, o RangeOptions) ([]wire.KV, int64, error) {
	var all []wire.KV
	rev := o.Revision
	for {
		req := wire.RangeRequest{Namespace: ns, Start: start, End: end, Revision: rev, Reverse: o.Reverse, Consistency: consistency(o.Stale)}
		if o.Limit > 0 {
			req.Limit = int64(o.Limit - len(all))
		}
		out, err := c.call(ctx, wire.PathRange, req.Encode(), readKind(o.Stale))
		if err != nil {
			return nil, 0, fmt.Errorf("flaredb: range: %w", err)
		}
		var resp wire.RangeResponse
		if err := resp.Decode(out); err != nil {
			return nil, 0, fmt.Errorf("flaredb: range: response: %w", err)
		}
		all = append(all, resp.KVs...)
		rev = resp.Revision
		if !resp.More || len(resp.KVs) == 0 || (o.Limit > 0 && len(all) >= o.Limit) {
			return all, rev, nil
		}
		last := resp.KVs[len(resp.KVs)-1].Key
		if o.Reverse {
			end = bytes.Clone(last)
		} else {
			start = append(bytes.Clone(last), 0)
		}
		// Later pages read at the first page's revision (MVCC), and stale
		// or not, they must come from a member that has it.
		o.Stale = false
	}
}

// Txn runs a transaction in namespace ns.
func (c *Client) Txn(ctx context.Context, ns string, t wire.Txn) (wire.TxnResult, error) {
	if err := t.Validate(storageMaxKey); err != nil {
		return wire.TxnResult{}, fmt.Errorf("flaredb: txn: %w", err)
	}
	if err := wire.ValidateNamespace(ns); err != nil {
		return wire.TxnResult{}, fmt.Errorf("flaredb: txn: %w", err)
	}
	req := wire.TxnRequest{Namespace: ns, Txn: t}
	body := req.Encode()
	if len(body) > wire.MaxRequestBytes {
		return wire.TxnResult{}, fmt.Errorf("flaredb: txn: %d bytes (max %d): %w", len(body), wire.MaxRequestBytes, wire.ErrRequestTooLarge)
	}
	kind := write
	if !t.HasWrites() {
		kind = read
	}
	var out []byte
	var err error
	if txnBatchable(&t) {
		out, err = c.callBatched(ctx, wire.PathTxn, body, kind)
	} else {
		out, err = c.call(ctx, wire.PathTxn, body, kind)
	}
	if err != nil {
		return wire.TxnResult{}, fmt.Errorf("flaredb: txn: %w", err)
	}
	var resp wire.TxnResponse
	if err := resp.Decode(out); err != nil {
		return wire.TxnResult{}, fmt.Errorf("flaredb: txn: response: %w", err)
	}
	return resp.Result, nil
}

// Revision returns the current and compacted revisions.
func (c *Client) Revision(ctx context.Context, stale bool) (current, compacted int64, err error) {
	req := wire.RevisionRequest{Consistency: consistency(stale)}
	out, err := c.call(ctx, wire.PathRevision, req.Encode(), readKind(stale))
	if err != nil {
		return 0, 0, fmt.Errorf("flaredb: revision: %w", err)
	}
	var resp wire.RevisionResponse
	if err := resp.Decode(out); err != nil {
		return 0, 0, fmt.Errorf("flaredb: revision: response: %w", err)
	}
	return resp.Current, resp.Compacted, nil
}

// Compact discards history below rev (store-wide).
func (c *Client) Compact(ctx context.Context, rev int64) error {
	req := wire.CompactRequest{Revision: rev}
	// Compaction is idempotent: repeating it changes nothing more.
	if _, err := c.call(ctx, wire.PathCompact, req.Encode(), read); err != nil {
		return fmt.Errorf("flaredb: compact: %w", err)
	}
	return nil
}

// Status returns the status of the member at endpoint ("" : any member).
func (c *Client) Status(ctx context.Context, endpoint string) (wire.Status, error) {
	body := wire.EncodeEmpty(wire.TagStatusRequest)
	var out []byte
	var err error
	if endpoint != "" {
		ctx, cancel := c.withTimeout(ctx)
		defer cancel()
		out, _, err = c.do(ctx, endpoint, wire.PathStatus, body)
	} else {
		out, err = c.call(ctx, wire.PathStatus, body, local)
	}
	if err != nil {
		return wire.Status{}, fmt.Errorf("flaredb: status: %w", err)
	}
	var resp wire.StatusResponse
	if err := resp.Decode(out); err != nil {
		return wire.Status{}, fmt.Errorf("flaredb: status: response: %w", err)
	}
	return resp.Status, nil
}

// AddMember adds a voter. Adding an existing voter again is a no-op, so
// the call is retried like a read.
func (c *Client) AddMember(ctx context.Context, m wire.Member) error {
	req := wire.MemberAddRequest{Member: m}
	if _, err := c.call(ctx, wire.PathMemberAdd, req.Encode(), read); err != nil {
		return fmt.Errorf("flaredb: member add: %w", err)
	}
	return nil
}

// RemoveMember removes a member.
func (c *Client) RemoveMember(ctx context.Context, id string) error {
	req := wire.MemberRemoveRequest{ID: id}
	if _, err := c.call(ctx, wire.PathMemberRemove, req.Encode(), write); err != nil {
		return fmt.Errorf("flaredb: member remove: %w", err)
	}
	return nil
}

// TransferLeadership moves leadership to member id ("": any).
func (c *Client) TransferLeadership(ctx context.Context, id string) error {
	req := wire.TransferLeaderRequest{ID: id}
	if _, err := c.call(ctx, wire.PathTransferLeader, req.Encode(), write); err != nil {
		return fmt.Errorf("flaredb: leader transfer: %w", err)
	}
	return nil
}

// SaveSnapshot streams a consistent snapshot of the whole store to w.
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer) error {
	body := wire.EncodeEmpty(wire.TagSnapshotRequest)
	var lastErr error
	for _, ep := range c.order(false) {
		resp, err := c.post(ctx, ep, wire.PathSnapshot, body)
		if err != nil {
			lastErr = err
			continue
		}
		if resp.StatusCode != http.StatusOK {
			out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			lastErr = responseError(ep, resp, out)
			continue
		}
		_, err = io.Copy(w, resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("flaredb: snapshot from %s: %w", ep, err)
		}
		return nil
	}
	return fmt.Errorf("flaredb: snapshot: %w", lastErr)
}

// Request coalescing. Point reads and transactions that return no values
// go through a per-client batcher: while maxBatchesInFlight requests of
// them are outstanding, further calls wait in a queue, and the next request
// carries everything queued (up to wire.MaxBatchItems calls) as one
// wire.PathBatch call to the leader, which proposes their writes in one log
// entry and confirms leadership once for their reads. A full batch goes out
// at once whatever is in flight, so a busy client is not limited to one
// request at a time; a lone call goes out as its usual request. This trades
// a little latency (a call may wait for the request before it) for far
// less work per call in the client and the member: most of a call's cost
// is the HTTP/2 request and its syscalls, not the data. Each call keeps its
// own result and retry rules: a call whose slot (or whole batch) failed in
// a way the rules allow retrying is retried on its own through call; a
// write whose batch was lost in transit fails with ErrUnknownOutcome like
// a single write; a call still queued when its context ends was never
// sent.

const (
	maxBatchesInFlight = 1
	// sendAtQueued: a batch goes out regardless of maxBatchesInFlight once
	// this many calls wait.
	sendAtQueued = 3
	// maxBatchBytes bounds a batch request; larger calls are not batched.
	maxBatchBytes = 8 << 20
	maxBatchable  = 1 << 20
)

type batcher struct {
	mu       sync.Mutex
	queue    []*batchCall
	inflight int
}

type batchCall struct {
	ctx  context.Context
	path string
	body []byte
	kind callKind
	done chan batchResult // buffered 1
}

type batchResult struct {
	out []byte
	err error
	// retry: send the call again on its own (nothing was applied, or it
	// is a read).
	retry bool
}

// txnBatchable reports whether t's answer is small enough to share a
// batch response: no op returns a value.
func txnBatchable(t *wire.Txn) bool {
	for _, ops := range [][]wire.Op{t.Then, t.Else} {
		for _, op := range ops {
			if op.Type == wire.OpGet {
				return false
			}
		}
	}
	return true
}

// callBatched is call for a batchable request.
func (c *Client) callBatched(ctx context.Context, path string, body []byte, kind callKind) ([]byte, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(body) > maxBatchable || c.Leader() == "" {
		return c.call(ctx, path, body, kind)
	}
	bc := &batchCall{ctx: ctx, path: path, body: body, kind: kind, done: make(chan batchResult, 1)}
	b := &c.batches
	b.mu.Lock()
	switch {
	case b.inflight < maxBatchesInFlight:
		b.inflight++
		b.mu.Unlock()
		c.sendBatches([]*batchCall{bc})
	case len(b.queue)+1 >= sendAtQueued:
		// Enough calls wait to make a batch worth sending now.
		batch := append(b.takeQueued(), bc)
		b.inflight++
		b.mu.Unlock()
		c.sendBatches(batch)
	default:
		b.queue = append(b.queue, bc)
		b.mu.Unlock()
	}
	select {
	case r := <-bc.done:
		if r.retry {
			return c.call(ctx, path, body, kind)
		}
		return r.out, r.err
	case <-ctx.Done():
		b.mu.Lock()
		queued := false
		if i := slices.Index(b.queue, bc); i >= 0 {
			b.queue = slices.Delete(b.queue, i, i+1)
			queued = true
		}
		b.mu.Unlock()
		if queued || kind != write {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %w", wire.ErrUnknownOutcome, ctx.Err())
	}
}

// sendBatches sends batch, then keeps sending what queued up meanwhile
// (in another goroutine, so the caller gets its answer) until the queue is
// empty. The caller holds one of the in-flight slots.
func (c *Client) sendBatches(batch []*batchCall) {
	c.sendBatch(batch)
	if next := c.nextBatch(); next != nil {
		go func() {
			for ; next != nil; next = c.nextBatch() {
				c.sendBatch(next)
			}
		}()
	}
}

// nextBatch takes the next batch off the queue, or gives up the in-flight
// slot if the queue is empty.
func (c *Client) nextBatch() []*batchCall {
	b := &c.batches
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.inflight--
		return nil
	}
	return b.takeQueued()
}

// takeQueued takes the next batch off the queue (at most
// wire.MaxBatchItems calls and maxBatchBytes). b.mu must be held.
func (b *batcher) takeQueued() []*batchCall {
	n, size := 0, 0
	for n < len(b.queue) && n < wire.MaxBatchItems-1 && size+len(b.queue[n].body) <= maxBatchBytes-maxBatchable {
		size += len(b.queue[n].body)
		n++
	}
	n = min(max(n, 1), len(b.queue))
	batch := slices.Clone(b.queue[:n])
	b.queue = slices.Delete(b.queue, 0, n)
	return batch
}

// sendBatch sends one batch and answers every call in it.
func (c *Client) sendBatch(batch []*batchCall) {
	if len(batch) == 1 {
		bc := batch[0]
		out, err := c.call(bc.ctx, bc.path, bc.body, bc.kind)
		bc.done <- batchResult{out: out, err: err}
		return
	}
	leader := c.Leader()
	if leader == "" || c.closed.Load() {
		for _, bc := range batch {
			bc.done <- batchResult{retry: true}
		}
		return
	}
	items := make([][]byte, len(batch))
	for i, bc := range batch {
		items[i] = bc.body
	}
	ctx, cancel := context.WithTimeout(c.root, c.cfg.RequestTimeout)
	out, hint, err := c.do(ctx, leader, wire.PathBatch, wire.EncodeBatch(wire.TagBatchRequest, items))
	cancel()
	var resps [][]byte
	if err == nil {
		resps, err = wire.DecodeBatch(wire.TagBatchResponse, out)
		if err == nil && len(resps) != len(batch) {
			err = fmt.Errorf("%d answers to a batch of %d", len(resps), len(batch))
		}
		if err != nil {
			err = fmt.Errorf("batch response from %s: %w", leader, err)
		}
	}
	if err != nil {
		c.log.Debug("batch failed", "endpoint", leader, "calls", len(batch), "err", err)
		var we *wire.Error
		if errors.As(err, &we) && we.Code == wire.CodeNotLeader {
			c.setLeader(we.Leader)
		}
		for _, bc := range batch {
			bc.done <- c.batchFailure(bc, err)
		}
		return
	}
	if hint != "" {
		c.setLeader(hint)
	}
	for i, bc := range batch {
		if tag, terr := wire.PeekTag(resps[i]); terr == nil && tag == wire.TagError {
			we, derr := wire.DecodeError(resps[i])
			if derr != nil {
				bc.done <- c.batchFailure(bc, fmt.Errorf("batch response from %s: %w", leader, derr))
				continue
			}
			bc.done <- c.batchFailure(bc, we)
			continue
		}
		bc.done <- batchResult{out: resps[i]}
	}
}

// retryable reports whether a call of kind that a member answered with
// code may be sent again: a write only if it was certainly not applied.
func retryable(kind callKind, code wire.Code) bool {
	if kind == write {
		return wire.Retryable(code) && wire.NotApplied(code)
	}
	return wire.RetryableRead(code)
}

// batchFailure applies call's retry rules to a call whose batch or slot
// failed with err.
func (c *Client) batchFailure(bc *batchCall, err error) batchResult {
	var we *wire.Error
	switch {
	case errors.As(err, &we):
		if retryable(bc.kind, we.Code) {
			return batchResult{retry: true}
		}
		return batchResult{err: err}
	case isDialError(err), bc.kind != write:
		return batchResult{retry: true}
	}
	return batchResult{err: fmt.Errorf("%w: %v", wire.ErrUnknownOutcome, err)}
}
