package flaredb

import (
	"context"
	"errors"
	"io"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// Call serves one API call (wire.Path* except the streams: watch and
// snapshot) in-process, with the semantics of the HTTP API minus the
// transport: the node's own storage client uses it for its local member
// and so skips HTTP/2 framing, TLS and a loopback round trip per request.
// body is an encoded request; the answer is the encoded response. Errors
// are *wire.Error. A request only the leader can serve is not forwarded:
// it fails with not-leader naming the leader, and the client goes there.
func (s *Server) Call(ctx context.Context, path string, body []byte) ([]byte, error) {
	n := s.node.Load()
	if n == nil || n.stopping.Load() {
		return nil, wire.Errorf(wire.CodeShuttingDown, "member %q is not running", s.cfg.ID)
	}
	h, ok := n.callable[path]
	if !ok {
		return nil, wire.Errorf(wire.CodeMalformed, "no in-process call %q", path)
	}
	if len(body) > wire.MaxRequestBytes {
		return nil, wire.Errorf(wire.CodeRequestTooLarge, "body exceeds %d bytes", wire.MaxRequestBytes)
	}
	// Decoded requests alias their buffer and may outlive the call (a
	// proposal in a batch); the caller may reuse its buffer.
	body = append([]byte(nil), body...)
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	defer cancel()
	out, err := h(ctx, body)
	if errors.Is(err, errForward) {
		return nil, n.notLeader()
	}
	if err != nil {
		return nil, wire.ToError(err)
	}
	return out, nil
}

// Watch opens a watch stream in-process: body is an encoded
// wire.WatchRequest and the reader yields the same frames the HTTP API
// streams (start frame first). The stream ends when ctx ends, the reader
// is closed, or the member stops. Errors before the stream starts are
// *wire.Error, as in Call.
func (s *Server) Watch(ctx context.Context, body []byte) (io.ReadCloser, error) {
	n := s.node.Load()
	if n == nil || n.stopping.Load() {
		return nil, wire.Errorf(wire.CodeShuttingDown, "member %q is not running", s.cfg.ID)
	}
	body = append([]byte(nil), body...)
	req, from, err := n.startWatch(ctx, body)
	if err != nil {
		return nil, wire.ToError(err)
	}
	pr, pw := io.Pipe()
	// The stream ends with the caller's context, with Close, or when the
	// member ends its streams; closing the pipe then also frees a write
	// blocked on a reader that stopped reading.
	ctx, cancel := context.WithCancel(ctx)
	stopOnStreams := context.AfterFunc(n.streams, cancel)
	context.AfterFunc(ctx, func() { pw.CloseWithError(io.ErrClosedPipe) })
	n.goFunc(func() {
		defer stopOnStreams()
		defer cancel()
		n.runWatch(ctx, &watchStream{w: pw}, &req, from)
		pw.CloseWithError(io.ErrUnexpectedEOF) // a stream never ends cleanly
	})
	return &localStream{PipeReader: pr, cancel: cancel}, nil
}

// localStream ends the server side when the reader is closed.
type localStream struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (l *localStream) Close() error {
	l.cancel()
	return l.PipeReader.Close()
}
