package qmp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrClosed: Close was called on the client.
	ErrClosed = errors.New("qmp: client closed")
	// ErrConnectionLost: the connection ended without Close (QEMU exited,
	// the socket closed or a read failed).
	ErrConnectionLost = errors.New("qmp: connection lost")
	// ErrProtocol: the peer sent something that is not QMP.
	ErrProtocol = errors.New("qmp: protocol error")
)

// Error is an error reply from QEMU: the command reached QEMU and QEMU
// refused or failed it. Class is QEMU's error class (GenericError,
// CommandNotFound, DeviceNotFound, ...), Desc its human-readable text.
type Error struct {
	Command string
	Class   string
	Desc    string
}

func (e *Error) Error() string {
	if e.Command == "" {
		return fmt.Sprintf("qmp: %s: %s", e.Class, e.Desc)
	}
	return fmt.Sprintf("qmp: %s: %s: %s", e.Command, e.Class, e.Desc)
}

// Event is an asynchronous notification from QEMU.
type Event struct {
	// Name is QEMU's event name: SHUTDOWN, RESET, POWERDOWN, STOP, ...
	Name string
	// Data is the event's "data" member as sent, or nil when it has none.
	Data json.RawMessage
	// Time is when QEMU emitted it (its "timestamp"); zero when absent.
	Time time.Time
}

// Greeting is what QEMU sends first on a new connection.
type Greeting struct {
	Version struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

// String is the version as "7.2.22".
func (g Greeting) String() string {
	v := g.Version.QEMU
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
}

// kind is what a message from QEMU is.
type kind int

const (
	kindGreeting kind = iota + 1
	kindReturn
	kindError
	kindEvent
)

// message is one decoded message from QEMU.
type message struct {
	kind kind
	// id is the request id echoed back; hasID is false when the reply
	// carries none or one this client cannot have sent (not a number).
	id    uint64
	hasID bool
	// ret is the "return" member of a success reply.
	ret json.RawMessage
	// err is the "error" member of an error reply.
	err *Error
	// event is set for kindEvent.
	event Event
	// greeting is set for kindGreeting.
	greeting Greeting
}

// parseMessage classifies one JSON value from the stream. Exactly one of
// the members QMP, return, error and event must be present.
func parseMessage(raw []byte) (message, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return message{}, fmt.Errorf("%w: not a JSON object: %w", ErrProtocol, err)
	}
	var m message
	n := 0
	if v, ok := fields["QMP"]; ok {
		n++
		m.kind = kindGreeting
		if err := json.Unmarshal(v, &m.greeting); err != nil {
			return message{}, fmt.Errorf("%w: greeting: %w", ErrProtocol, err)
		}
	}
	if v, ok := fields["return"]; ok {
		n++
		m.kind = kindReturn
		m.ret = v
	}
	if v, ok := fields["error"]; ok {
		n++
		m.kind = kindError
		var e struct {
			Class string `json:"class"`
			Desc  string `json:"desc"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return message{}, fmt.Errorf("%w: error reply: %w", ErrProtocol, err)
		}
		if e.Class == "" {
			return message{}, fmt.Errorf("%w: error reply without a class", ErrProtocol)
		}
		m.err = &Error{Class: e.Class, Desc: e.Desc}
	}
	if v, ok := fields["event"]; ok {
		n++
		m.kind = kindEvent
		if err := json.Unmarshal(v, &m.event.Name); err != nil || m.event.Name == "" {
			return message{}, fmt.Errorf("%w: event without a name", ErrProtocol)
		}
		if d, ok := fields["data"]; ok && string(d) != "null" {
			m.event.Data = d
		}
		if ts, ok := fields["timestamp"]; ok {
			var t struct {
				Seconds      int64 `json:"seconds"`
				Microseconds int64 `json:"microseconds"`
			}
			if err := json.Unmarshal(ts, &t); err != nil {
				return message{}, fmt.Errorf("%w: event %s: timestamp: %w", ErrProtocol, m.event.Name, err)
			}
			// QEMU sends -1/-1 when it could not read the clock.
			if t.Seconds >= 0 && t.Microseconds >= 0 && t.Microseconds < 1e6 {
				m.event.Time = time.Unix(t.Seconds, t.Microseconds*1000)
			}
		}
	}
	if n != 1 {
		return message{}, fmt.Errorf("%w: a message needs exactly one of QMP, return, error, event (found %d)", ErrProtocol, n)
	}
	if m.kind == kindReturn || m.kind == kindError {
		if v, ok := fields["id"]; ok {
			if id, err := strconv.ParseUint(string(v), 10, 64); err == nil {
				m.id, m.hasID = id, true
			}
		}
	}
	return m, nil
}

// decoder reads QMP messages from a stream. QEMU separates messages with
// "\r\n", but any JSON whitespace between values is accepted, and a value
// may be of any size.
type decoder struct {
	dec *json.Decoder
}

func newDecoder(r io.Reader) *decoder {
	return &decoder{dec: json.NewDecoder(r)}
}

// next returns the next message. A clean end of stream between messages is
// io.EOF; an end inside a message is io.ErrUnexpectedEOF; anything that is
// not QMP wraps ErrProtocol.
func (d *decoder) next() (message, error) {
	var raw json.RawMessage
	if err := d.dec.Decode(&raw); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return message{}, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return message{}, err
	}
	return parseMessage(raw)
}

// request is one command on the wire.
type request struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        uint64 `json:"id"`
}
