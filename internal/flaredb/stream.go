package flaredb

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// Call streams (wire.PathStream): many calls over one HTTP/2 stream, each
// served like a POST to its path. See the wire package for the framing and
// why it exists.

const (
	// maxStreamCalls bounds the calls of one stream being served at once;
	// past it the member stops reading the stream, and HTTP/2 flow control
	// holds the client back. It matches the API's MaxConcurrentStreams.
	maxStreamCalls = 4096
	// streamReadBuffer is the read buffer of a stream's request body.
	streamReadBuffer = 64 << 10
)

// handleStream serves a call stream until the client ends its request body
// (then it answers what is in flight and returns), the client goes away,
// or the member ends its streams on shutdown (then it answers what is in
// flight; calls arriving meanwhile are refused as shutting down, so
// clients retry them elsewhere).
func (n *node) handleStream(w http.ResponseWriter, r *http.Request) {
	if err := n.checkRequest(r); err != nil {
		n.writeError(w, err)
		return
	}
	if r.ProtoMajor != 2 {
		n.writeError(w, wire.Errorf(wire.CodeMalformed, "call streams need HTTP/2, got %s", r.Proto))
		return
	}
	rc := http.NewResponseController(w)
	setContentType(w.Header())
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}

	ctx := r.Context()
	replies := make(chan []byte, 256)
	var pending atomic.Int64 // calls read and not yet answered
	slots := make(chan struct{}, maxStreamCalls)
	readDone := make(chan error, 1)
	go func() {
		readDone <- n.readCalls(ctx, bufio.NewReaderSize(r.Body, streamReadBuffer), slots, &pending, replies)
	}()

	// Answer calls as they finish, flushing once per burst: replies that
	// are ready together go out in one write. Once draining (the client
	// ended its body, or the member is stopping), return when every call
	// read is answered; a call's counter drops after its reply is queued,
	// so the tick catches the last one.
	var draining <-chan time.Time
	streamsDone := n.streams.Done()
	for {
		select {
		case f := <-replies:
			if !n.writeReplies(w, rc, f, replies) {
				return
			}
		case err := <-readDone:
			if err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
				n.log.Debug("call stream ended", "remote", r.RemoteAddr, "err", err)
			}
			readDone = nil
			if draining == nil {
				draining = time.Tick(5 * time.Millisecond)
			}
		case <-streamsDone:
			streamsDone = nil // closed: would be ready on every pass
			if draining == nil {
				draining = time.Tick(5 * time.Millisecond)
			}
		case <-draining:
			if pending.Load() == 0 && len(replies) == 0 {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// writeReplies writes first and whatever else is ready, then flushes. It
// reports false if the stream is broken.
func (n *node) writeReplies(w http.ResponseWriter, rc *http.ResponseController, first []byte, more <-chan []byte) bool {
	if _, err := w.Write(first); err != nil {
		return false
	}
	for {
		select {
		case f := <-more:
			if _, err := w.Write(f); err != nil {
				return false
			}
		default:
			return rc.Flush() == nil
		}
	}
}

// readCalls reads call frames and serves each in its own goroutine, which
// queues its framed reply on replies. It returns when the body ends or
// fails; a malformed frame ends the stream (the framing is lost), after
// the calls read before it are answered.
func (n *node) readCalls(ctx context.Context, br *bufio.Reader, slots chan struct{}, pending *atomic.Int64, replies chan<- []byte) error {
	for {
		frame, err := wire.ReadFrame(br, wire.MaxRequestBytes+wire.MaxAddrLen+64)
		if err != nil {
			return err
		}
		var call wire.StreamCall
		if err := call.Decode(frame); err != nil {
			return err
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		pending.Add(1)
		go func() {
			defer func() { <-slots }()
			reply := n.serveCall(ctx, &call)
			frame := wire.AppendFramed(nil, reply.Append)
			select {
			case replies <- frame:
			case <-ctx.Done():
			}
			pending.Add(-1)
		}()
	}
}

// serveCall serves one call of a stream as serve would serve a POST to its
// path, forwarding to the leader what only the leader serves.
func (n *node) serveCall(ctx context.Context, call *wire.StreamCall) wire.StreamReply {
	reply := wire.StreamReply{ID: call.ID}
	fail := func(err error) wire.StreamReply {
		we := wire.ToError(err)
		reply.Failed, reply.Body = true, we.Encode()
		return reply
	}
	h, ok := n.callable[call.Path]
	if !ok {
		return fail(wire.Errorf(wire.CodeMalformed, "no call %q on a call stream", call.Path))
	}
	if n.stopping.Load() {
		return fail(n.errStopping())
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	defer cancel()
	out, err := h(ctx, call.Body)
	if errors.Is(err, errForward) {
		_, api := n.leaderAPI()
		if api == "" {
			return fail(n.notLeader())
		}
		n.stats.forwarded.Add(1)
		out, err = n.callPeer(ctx, api, call.Path, call.Body)
		reply.Leader = api
	}
	if err != nil {
		return fail(err)
	}
	reply.Body = out
	return reply
}
