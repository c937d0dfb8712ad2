package wire

import (
	"bytes"
	"testing"
)

// TestAppendFramedMatchesAppendFrame: framing a message in place gives the
// bytes of framing its separate encoding, after existing data, for bodies
// whose length prefix takes one, two and three bytes.
func TestAppendFramedMatchesAppendFrame(t *testing.T) {
	for _, size := range []int{0, 1, 127, 128, 300, 20000} {
		m := StreamCall{ID: 7, Path: PathTxn, Body: bytes.Repeat([]byte{0xab}, size)}
		prefix := []byte("earlier frames")
		want := AppendFrame(append([]byte(nil), prefix...), m.Encode())
		got := AppendFramed(append([]byte(nil), prefix...), m.Append)
		if !bytes.Equal(got, want) {
			t.Fatalf("body of %d bytes: AppendFramed differs from AppendFrame", size)
		}
	}
}
