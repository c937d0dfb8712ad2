package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Streams (watch) carry a sequence of messages, each prefixed by its length
// as a uvarint.

// AppendFrame appends body with its length prefix.
func AppendFrame(dst, body []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...)
}

// AppendFramed appends the frame of the message appendMsg appends (a
// message's Append method): AppendFrame(dst, appendMsg(nil)) without
// encoding into a buffer of its own first. The message is encoded after
// room for the longest length prefix, then moved up behind the real one.
func AppendFramed(dst []byte, appendMsg func([]byte) []byte) []byte {
	start := len(dst)
	dst = appendMsg(append(dst, make([]byte, binary.MaxVarintLen64)...))
	body := dst[start+binary.MaxVarintLen64:]
	n := binary.PutUvarint(dst[start:], uint64(len(body)))
	copy(dst[start+n:], body)
	return dst[:start+n+len(body)]
}

// ReadFrame reads one length-prefixed message of at most max bytes. It
// returns io.EOF only at a clean frame boundary.
func ReadFrame(r *bufio.Reader, max int) ([]byte, error) {
	var l uint64
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if i == 0 {
					return nil, io.EOF
				}
				return nil, fmt.Errorf("%w: truncated frame length", ErrMalformed)
			}
			return nil, err
		}
		if i == binary.MaxVarintLen64-1 && c > 1 {
			return nil, fmt.Errorf("%w: frame length overflows", ErrMalformed)
		}
		l |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			break
		}
		if i == binary.MaxVarintLen64-1 {
			return nil, fmt.Errorf("%w: frame length overflows", ErrMalformed)
		}
	}
	if l > uint64(max) {
		return nil, fmt.Errorf("%w: frame of %d bytes (max %d)", ErrMalformed, l, max)
	}
	buf := make([]byte, l)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: frame truncated", ErrMalformed)
		}
		return nil, err
	}
	return buf, nil
}
