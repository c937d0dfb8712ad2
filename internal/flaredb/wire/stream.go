package wire

// Call streams. A client may carry its calls over one long-lived HTTP/2
// stream per member instead of one HTTP request each: a POST to PathStream
// whose request body is a sequence of frames (AppendFrame), each an
// encoded StreamCall, and whose response body is a sequence of frames, each
// an encoded StreamReply. Calls are independent and answered in any order,
// matched by ID. What a call costs then is one DATA frame each way, instead
// of a new stream with HEADERS, header compression, a request object and a
// handler goroutine on both sides: on a CPU-bound member that is most of
// the cost of a small call. Each call keeps the semantics of a POST to its
// path (the same handlers, limits and errors; a follower forwards what
// only the leader serves). The stream itself is refused with an Error
// answer like any request (wrong cluster, not HTTP/2, shutting down).
const (
	// PathStream opens a call stream.
	PathStream = "/flaredb/v1/stream"
	// TagStreamCall and TagStreamReply are the frames' message tags.
	TagStreamCall  Tag = 31
	TagStreamReply Tag = 95
	// maxPathLen bounds a call's path.
	maxPathLen = 64
)

// StreamCall is one call on a call stream: the path it would be POSTed to
// and the encoded request.
type StreamCall struct {
	ID   uint64
	Path string
	Body []byte
}

// StreamReply answers the call with the same ID: Body is the encoded
// response, or, when Failed, an encoded Error. Leader, when set, is the
// leader's API address (the call was forwarded there).
type StreamReply struct {
	ID     uint64
	Failed bool
	Leader string
	Body   []byte
}

// Append appends the encoded call to dst.
func (m *StreamCall) Append(dst []byte) []byte {
	e := NewEncoder(dst)
	e.header(TagStreamCall)
	e.Uvarint(m.ID)
	e.String(m.Path)
	e.Blob(m.Body)
	return e.Bytes()
}

func (m *StreamCall) Encode() []byte { return m.Append(nil) }

// Decode decodes a call; Body aliases b.
func (m *StreamCall) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagStreamCall)
	m.ID = d.Uvarint("call id")
	m.Path = d.String("call path", maxPathLen)
	m.Body = d.Blob("call body", MaxRequestBytes, ErrRequestTooLarge)
	return d.Finish()
}

// Append appends the encoded reply to dst.
func (m *StreamReply) Append(dst []byte) []byte {
	e := NewEncoder(dst)
	e.header(TagStreamReply)
	e.Uvarint(m.ID)
	e.Bool(m.Failed)
	e.String(m.Leader)
	e.Blob(m.Body)
	return e.Bytes()
}

func (m *StreamReply) Encode() []byte { return m.Append(nil) }

// Decode decodes a reply; Body aliases b.
func (m *StreamReply) Decode(b []byte) error {
	d := NewDecoder(b)
	d.Header(TagStreamReply)
	m.ID = d.Uvarint("reply id")
	m.Failed = d.Bool("reply failed")
	m.Leader = d.String("reply leader", MaxAddrLen)
	m.Body = d.Blob("reply body", MaxFrameBytes, nil)
	return d.Finish()
}
