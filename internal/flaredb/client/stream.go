package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// Call streams. Every call to a member goes over one long-lived HTTP/2
// stream to it (wire.PathStream), opened on first use and again after it
// breaks: a call is then one DATA frame each way instead of a new HTTP
// request. A member that does not know call streams (404) gets plain
// POSTs from then on.

// errNotSent wraps a failure that happened before a call's frame was
// handed to the transport: nothing reached the member, so the call may be
// retried whatever it is (like a dial error).
type errNotSent struct{ err error }

func (e *errNotSent) Error() string { return e.err.Error() }
func (e *errNotSent) Unwrap() error { return e.err }

// callStream is the open call stream to one member.
type callStream struct {
	ep string

	body *io.PipeWriter
	// wmu serializes frame writes (a write blocks until the transport
	// took the frame); buf is the frame being written.
	wmu sync.Mutex
	buf []byte

	// mu guards the fields below. It is never held while writing, so the
	// reply reader is not held up by a write stuck in flow control.
	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan wire.StreamReply
	err     error // set once the stream broke; it is then unusable

	resp *http.Response
}

// streams holds a client's call streams by endpoint.
type streams struct {
	mu sync.Mutex
	by map[string]*callStream
	// unsupported are members that answered 404 to a stream.
	unsupported map[string]bool
}

// doStream sends one call over ep's call stream. ok is false if ep does
// not serve call streams (the caller falls back to a POST).
func (c *Client) doStream(ctx context.Context, ep, path string, body []byte) (out []byte, leaderHint string, err error, ok bool) {
	s, err := c.stream(ctx, ep)
	if s == nil && err == nil {
		return nil, "", nil, false
	}
	if err != nil {
		return nil, "", &errNotSent{err}, true
	}
	r, err := s.call(ctx, path, body)
	if err != nil {
		return nil, "", err, true
	}
	if r.Failed {
		we, derr := wire.DecodeError(r.Body)
		if derr != nil {
			return nil, "", fmt.Errorf("%s: undecodable error on a call stream: %w", ep, derr), true
		}
		if we.Leader == "" {
			we.Leader = r.Leader
		}
		return nil, "", we, true
	}
	return r.Body, r.Leader, nil, true
}

// stream returns the open call stream to ep, opening one if needed; nil
// and no error if ep does not serve call streams.
func (c *Client) stream(ctx context.Context, ep string) (*callStream, error) {
	ss := &c.streams
	ss.mu.Lock()
	if ss.unsupported[ep] {
		ss.mu.Unlock()
		return nil, nil
	}
	if s := ss.by[ep]; s != nil {
		ss.mu.Unlock()
		return s, nil
	}
	ss.mu.Unlock()

	s, err := c.openStream(ctx, ep)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if errors.Is(err, errNoStreams) {
		if ss.unsupported == nil {
			ss.unsupported = map[string]bool{}
		}
		ss.unsupported[ep] = true
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if cur := ss.by[ep]; cur != nil {
		// Another call opened one meanwhile: use it, drop ours.
		s.close(errors.New("superseded"))
		return cur, nil
	}
	if ss.by == nil {
		ss.by = map[string]*callStream{}
	}
	ss.by[ep] = s
	return s, nil
}

// forget drops s from the open streams once it broke.
func (c *Client) forget(s *callStream) {
	ss := &c.streams
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.by[s.ep] == s {
		delete(ss.by, s.ep)
	}
}

// closeStreams ends every call stream (Close).
func (c *Client) closeStreams() {
	ss := &c.streams
	ss.mu.Lock()
	all := ss.by
	ss.by = nil
	ss.mu.Unlock()
	for _, s := range all {
		s.close(ErrClosed)
	}
}

var errNoStreams = errors.New("member does not serve call streams")

// openStream opens a call stream to ep and starts reading its replies. The
// stream lives until it breaks or the client closes, not as long as ctx:
// ctx only bounds the wait for the member's answer.
func (c *Client) openStream(ctx context.Context, ep string) (*callStream, error) {
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(c.root, http.MethodPost, c.scheme+"://"+ep+wire.PathStream, pr)
	if err != nil {
		return nil, err
	}
	req.Header["Content-Type"] = contentType
	req.Header[wire.HeaderCluster] = c.clusterHdr
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.http.Do(req)
		done <- result{resp, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		pw.CloseWithError(ctx.Err())
		go func() {
			if r := <-done; r.resp != nil {
				r.resp.Body.Close()
			}
		}()
		return nil, ctx.Err()
	}
	if res.err != nil {
		pw.Close()
		return nil, res.err
	}
	resp := res.resp
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		pw.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, errNoStreams
		}
		out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, responseError(ep, resp, out)
	}
	s := &callStream{ep: ep, body: pw, pending: map[uint64]chan wire.StreamReply{}, resp: resp}
	go c.readReplies(s)
	return s, nil
}

// readReplies delivers replies to their calls until the stream ends; then
// it fails every call still waiting.
func (c *Client) readReplies(s *callStream) {
	br := bufio.NewReaderSize(s.resp.Body, 64<<10)
	for {
		frame, err := wire.ReadFrame(br, wire.MaxFrameBytes+wire.MaxAddrLen+64)
		if err == nil {
			var r wire.StreamReply
			if err = r.Decode(frame); err == nil {
				s.mu.Lock()
				ch := s.pending[r.ID]
				delete(s.pending, r.ID)
				s.mu.Unlock()
				if ch != nil {
					ch <- r
				}
				continue
			}
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		c.forget(s)
		s.close(fmt.Errorf("call stream to %s: %w", s.ep, err))
		return
	}
}

// close breaks the stream: waiting calls fail with err.
func (s *callStream) close(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	s.body.CloseWithError(err)
	s.resp.Body.Close()
	for _, ch := range pending {
		close(ch)
	}
}

// call sends one call and waits for its reply. An error before the frame
// was handed to the transport is an *errNotSent.
func (s *callStream) call(ctx context.Context, path string, body []byte) (wire.StreamReply, error) {
	ch := make(chan wire.StreamReply, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return wire.StreamReply{}, &errNotSent{err}
	}
	s.nextID++
	id := s.nextID
	s.pending[id] = ch
	s.mu.Unlock()
	call := wire.StreamCall{ID: id, Path: path, Body: body}
	s.wmu.Lock()
	s.buf = wire.AppendFramed(s.buf[:0], call.Append)
	_, err := s.body.Write(s.buf)
	if cap(s.buf) > 1<<20 {
		s.buf = nil // do not keep a large call's buffer
	}
	s.wmu.Unlock()
	if err != nil {
		// The pipe hands the frame over whole or reports why not; the
		// reader fails the pending calls when the stream ends.
		return wire.StreamReply{}, fmt.Errorf("call stream to %s: %w", s.ep, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			s.mu.Lock()
			err := s.err
			s.mu.Unlock()
			return wire.StreamReply{}, err
		}
		return r, nil
	case <-ctx.Done():
		s.mu.Lock()
		if s.pending != nil {
			delete(s.pending, id)
		}
		s.mu.Unlock()
		return wire.StreamReply{}, ctx.Err()
	}
}
