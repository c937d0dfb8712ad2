package flaredb

import (
	"context"
	"errors"

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
