package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func entries(from, to, term uint64) []*raft.Log {
	var ls []*raft.Log
	for i := from; i <= to; i++ {
		ls = append(ls, &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: fmt.Appendf(nil, "cmd-%d-%d", i, term)})
	}
	return ls
}

func checkBounds(t *testing.T, s *Store, first, last uint64) {
	t.Helper()
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	if f != first || l != last {
		t.Fatalf("bounds = %d..%d, want %d..%d", f, l, first, last)
	}
}

func checkEntry(t *testing.T, s *Store, index, term uint64) {
	t.Helper()
	var l raft.Log
	if err := s.GetLog(index, &l); err != nil {
		t.Fatalf("GetLog(%d): %v", index, err)
	}
	if l.Index != index || l.Term != term || string(l.Data) != fmt.Sprintf("cmd-%d-%d", index, term) {
		t.Fatalf("GetLog(%d) = %+v, want term %d", index, l, term)
	}
}

func TestAppendReadDelete(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	checkBounds(t, s, 0, 0)
	var l raft.Log
	if err := s.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog on empty store: %v", err)
	}
	if err := s.StoreLogs(entries(1, 10, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLog(entries(11, 11, 2)[0]); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 1, 11)
	checkEntry(t, s, 5, 1)
	checkEntry(t, s, 11, 2)
	// Prefix deletion (after a snapshot).
	if err := s.DeleteRange(1, 4); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 5, 11)
	if err := s.GetLog(4, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(4) after prefix delete: %v", err)
	}
	// Suffix deletion (a new leader overwrites entries), then new ones.
	if err := s.DeleteRange(9, 11); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 5, 8)
	if err := s.StoreLogs(entries(9, 12, 3)); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 5, 12)
	checkEntry(t, s, 9, 3)
	// Everything.
	if err := s.DeleteRange(5, 12); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 0, 0)
}

// The failure that made us leave raft-wal: truncate the tail, append,
// close, reopen. Everything must read back, bounds included.
func TestTailTruncationSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.StoreLogs(entries(1, 10, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(10, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(entries(10, 11, 2)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	checkBounds(t, s, 1, 11)
	checkEntry(t, s, 9, 1)
	checkEntry(t, s, 10, 2)
	checkEntry(t, s, 11, 2)
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 2 {
		t.Fatalf("CurrentTerm = %d, %v", v, err)
	}
}

func TestStableStore(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	// Raft tells "missing" from failures by this exact message.
	if _, err := s.Get([]byte("k")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get missing: %v", err)
	}
	if v, err := s.GetUint64([]byte("n")); err == nil || err.Error() != "not found" || v != 0 {
		t.Fatalf("GetUint64 missing: %d %v", v, err)
	}
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get([]byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get = %q %v", v, err)
	}
	if err := s.Set([]byte("short"), []byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetUint64([]byte("short")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetUint64 of a 1-byte value: %v", err)
	}
	// Stable keys never show up as log entries.
	checkBounds(t, s, 0, 0)
}

func TestEncodingRoundTrip(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	for _, l := range []raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("x")},
		{Index: 1 << 60, Term: 7, Type: raft.LogConfiguration, Data: bytes.Repeat([]byte{0xff}, 300), Extensions: []byte("ext"), AppendedAt: at},
		{Index: 3, Term: 2, Type: raft.LogNoop},
	} {
		b := AppendLog(nil, &l)
		var got raft.Log
		if err := DecodeLog(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.Index != l.Index || got.Term != l.Term || got.Type != l.Type || !bytes.Equal(got.Data, l.Data) ||
			!bytes.Equal(got.Extensions, l.Extensions) || !got.AppendedAt.Equal(l.AppendedAt) {
			t.Fatalf("round trip: %+v -> %+v", l, got)
		}
		// Every strict prefix is refused.
		for i := range b {
			if err := DecodeLog(b[:i], &got); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("prefix of %d/%d bytes: %v", i, len(b), err)
			}
		}
		if err := DecodeLog(append(b, 0), &got); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("trailing byte accepted: %v", err)
		}
	}
}

func FuzzDecodeLog(f *testing.F) {
	f.Add(AppendLog(nil, &raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("x")}))
	f.Add(AppendLog(nil, &raft.Log{Index: 9, Term: 3, Extensions: []byte("e"), AppendedAt: time.Unix(5, 0)}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := DecodeLog(b, &l); err != nil {
			return
		}
		// Anything accepted re-encodes to an entry that decodes the same
		// (varints need not be minimal, so the bytes may differ).
		var again raft.Log
		if err := DecodeLog(AppendLog(nil, &l), &again); err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", l, err)
		}
		if again.Index != l.Index || again.Term != l.Term || again.Type != l.Type || !bytes.Equal(again.Data, l.Data) ||
			!bytes.Equal(again.Extensions, l.Extensions) || !again.AppendedAt.Equal(l.AppendedAt) {
			t.Fatalf("decode/encode/decode changed %+v to %+v", l, again)
		}
	})
}
