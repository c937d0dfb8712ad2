package qmp

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the stream decoder, as if QEMU (or
// something pretending to be it) sent them. Decoding must never panic, must
// end (every call consumes input or fails), and every message it accepts
// must be exactly one well-formed kind.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		greeting,
		`{"return": {}, "id": 1}` + "\r\n",
		`{"id": "x", "error": {"class": "CommandNotFound", "desc": "The command nosuch has not been found"}}`,
		`{"timestamp": {"seconds": 1796424527, "microseconds": 671723}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}`,
		`{"timestamp": {"seconds": -1, "microseconds": -1}, "event": "RESET"}{"return": [1, 2, 3], "id": 18446744073709551615}`,
		`{"return": {}, "event": "X"}`,
		`{"error": {"desc": "no class"}, "id": 2}`,
		`{"return": {"status": "runn`,
		`[1, 2]`,
		"\r\n\r\n",
		`{"QMP": 5}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d := newDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			if i > len(b)+1 {
				t.Fatalf("decoded %d messages from %d bytes", i, len(b))
			}
			m, err := d.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrProtocol) {
					t.Fatalf("an error that is neither an end of input nor ErrProtocol: %v", err)
				}
				return
			}
			switch m.kind {
			case kindGreeting:
			case kindReturn:
				if m.ret == nil {
					t.Fatal("a return without a value")
				}
			case kindError:
				if m.err == nil || m.err.Class == "" {
					t.Fatalf("an error without a class: %+v", m.err)
				}
			case kindEvent:
				if m.event.Name == "" {
					t.Fatal("an event without a name")
				}
				if !m.event.Time.IsZero() && m.event.Time.Nanosecond()%1000 != 0 {
					t.Fatalf("event time %v is finer than QEMU's microseconds", m.event.Time)
				}
			default:
				t.Fatalf("message of kind %d", m.kind)
			}
		}
	})
}
