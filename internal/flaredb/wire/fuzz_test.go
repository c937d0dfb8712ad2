package wire

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecode from the seed messages")

// message is any decodable wire message.
type message interface {
	Decode([]byte) error
	Encode() []byte
}

// decoders lists every message decoder; FuzzDecode picks one by the first
// input byte.
var decoders = []func() message{
	func() message { return &GetRequest{} },
	func() message { return &RangeRequest{} },
	func() message { return &TxnRequest{} },
	func() message { return &WatchRequest{} },
	func() message { return &RevisionRequest{} },
	func() message { return &CompactRequest{} },
	func() message { return &MemberAddRequest{} },
	func() message { return &MemberRemoveRequest{} },
	func() message { return &TransferLeaderRequest{} },
	func() message { return &GetResponse{} },
	func() message { return &RangeResponse{} },
	func() message { return &TxnResponse{} },
	func() message { return &RevisionResponse{} },
	func() message { return &ReadIndexResponse{} },
	func() message { return &StatusResponse{} },
	func() message { return &WatchFrame{} },
	func() message { return &Error{} },
	func() message { return &StreamCall{} },
	func() message { return &StreamReply{} },
}

// seedMessages are valid messages of every kind.
func seedMessages() []message {
	kv := KV{Key: []byte("k"), Value: []byte("v"), CreateRevision: 3, ModRevision: 7, ExpiresAt: 99}
	txn := Txn{
		If: []Compare{
			{Key: []byte("a"), Target: CompareModRevision, Revision: 4}, {Key: []byte("b"), Target: CompareValue, Value: []byte("x")},
			{Key: []byte("m/"), Target: CompareRangeEmpty, RangeEnd: []byte("m0")},
		},
		Then: []Op{{Type: OpPut, Key: []byte("a"), Value: []byte("1"), TTL: 30}, {Type: OpDelete, Key: []byte("c")}},
		Else: []Op{{Type: OpGet, Key: []byte("a")}},
	}
	m := Member{ID: "m1", RaftAddress: "10.0.0.1:7710", APIAddress: "10.0.0.1:7711", Voter: true}
	return []message{
		&GetRequest{Namespace: "iam", Key: []byte("k"), Revision: 5, Consistency: Stale},
		&RangeRequest{Namespace: "iam/projects/p", Start: []byte("a"), End: []byte("z"), Limit: 10, Revision: 3, Reverse: true},
		&RangeRequest{Start: []byte("a")},
		&TxnRequest{Namespace: "x", Txn: txn},
		&WatchRequest{Namespace: "iam", Prefix: []byte("/r/"), FromRevision: 12},
		&RevisionRequest{Consistency: Linearizable},
		&CompactRequest{Revision: 100},
		&MemberAddRequest{Member: m},
		&MemberRemoveRequest{ID: "m2"},
		&TransferLeaderRequest{ID: "m3"},
		&GetResponse{Found: true, KV: kv, Revision: 8},
		&RangeResponse{KVs: []KV{kv, kv}, Revision: 9, More: true},
		&TxnResponse{Result: TxnResult{Succeeded: true, Revision: 10, Results: []OpResult{{KV: kv, Found: true}, {}}}},
		&RevisionResponse{Current: 10, Compacted: 2},
		&ReadIndexResponse{Index: 77},
		&StatusResponse{Status: Status{ID: "m1", ClusterID: "c", State: "Leader", Term: 2, Leader: m, Members: []Member{m, m}, DBSize: 4096, LastSnapshotTime: 1700000000000, LastSnapshotSize: 512}},
		&WatchFrame{Kind: FrameEvents, Revision: 7, Complete: true, Events: []Event{{Type: EventPut, KV: kv}, {Type: EventDelete, KV: kv}}},
		&WatchFrame{Kind: FrameProgress, Revision: 6},
		&WatchFrame{Kind: FrameError, Err: &Error{Code: CodeCompacted, Message: "gone"}},
		&Error{Code: CodeNotLeader, Message: "not me", Leader: "10.0.0.2:7711"},
		&StreamCall{ID: 1 << 40, Path: PathTxn, Body: (&TxnRequest{Namespace: "x", Txn: txn}).Encode()},
		&StreamReply{ID: 7, Leader: "10.0.0.2:7711", Body: (&GetResponse{Found: true, KV: kv, Revision: 8}).Encode()},
		&StreamReply{ID: 8, Failed: true, Body: (&Error{Code: CodeNotLeader, Message: "not me"}).Encode()},
	}
}

// indexOf returns the decoder index for a message's type.
func indexOf(m message) byte {
	for i, d := range decoders {
		if reflect.TypeOf(d()) == reflect.TypeOf(m) {
			return byte(i)
		}
	}
	panic(fmt.Sprintf("no decoder for %T", m))
}

func TestRoundTrip(t *testing.T) {
	for _, m := range seedMessages() {
		b := m.Encode()
		got := decoders[indexOf(m)]()
		if err := got.Decode(b); err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if !bytes.Equal(got.Encode(), b) {
			t.Fatalf("%T: re-encoding differs", m)
		}
		// Every strict prefix is refused.
		for i := 0; i < len(b); i++ {
			if err := decoders[indexOf(m)]().Decode(b[:i]); err == nil {
				t.Fatalf("%T: prefix of %d/%d bytes accepted", m, i, len(b))
			}
		}
	}
}

func TestDecodeLimits(t *testing.T) {
	big := make([]byte, storage.MaxValueSize+1)
	for name, c := range map[string]struct {
		m    message
		want error
	}{
		"key":      {&TxnRequest{Txn: Txn{Then: []Op{{Type: OpPut, Key: make([]byte, storage.MaxKeySize+1)}}}}, storage.ErrKeyTooLarge},
		"value":    {&TxnRequest{Txn: Txn{Then: []Op{{Type: OpPut, Key: []byte("k"), Value: big}}}}, storage.ErrValueTooLarge},
		"ops":      {&TxnRequest{Txn: Txn{Else: make([]Op, storage.MaxTxnOps+1)}}, storage.ErrTooManyOps},
		"ns":       {&GetRequest{Namespace: "A", Key: []byte("k")}, ErrBadNamespace},
		"emptykey": {&GetRequest{Key: nil}, storage.ErrEmptyKey},
		"ttl":      {&TxnRequest{Txn: Txn{Then: []Op{{Type: OpPut, Key: []byte("k"), TTL: MaxTTLSeconds + 1}}}}, ErrInvalid},
		"rangeend": {&TxnRequest{Txn: Txn{If: []Compare{{Key: []byte("k"), Target: CompareRangeEmpty, RangeEnd: make([]byte, storage.MaxKeySize+1)}}}}, storage.ErrKeyTooLarge},
		"rangeord": {&TxnRequest{Txn: Txn{If: []Compare{{Key: []byte("k"), Target: CompareRangeEmpty, RangeEnd: []byte("a")}}}}, storage.ErrInvalidRange},
		"noend":    {&TxnRequest{Txn: Txn{If: []Compare{{Key: []byte("k"), Target: CompareRangeEmpty}}}}, storage.ErrInvalidRange},
	} {
		err := decoders[indexOf(c.m)]().Decode(c.m.Encode())
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

// FuzzDecode feeds arbitrary bytes to every decoder. A decoder must never
// panic or allocate beyond its input's worth; whatever it accepts must
// re-encode to something that decodes to the same value.
func FuzzDecode(f *testing.F) {
	for _, m := range seedMessages() {
		f.Add(append([]byte{indexOf(m)}, m.Encode()...))
	}
	f.Add([]byte{2, Version, byte(TagTxnRequest), 0, 0x7f})
	f.Add([]byte{2, Version, byte(TagTxnRequest), 0, 0, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{15, Version, byte(TagWatchFrame), 0, 2, 1, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		newMsg := decoders[int(data[0])%len(decoders)]
		m := newMsg()
		if err := m.Decode(data[1:]); err != nil {
			return
		}
		again := newMsg()
		if err := again.Decode(m.Encode()); err != nil {
			t.Fatalf("%T: re-encoded message does not decode: %v", m, err)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("%T: round trip changed the message:\n%+v\n%+v", m, m, again)
		}
	})
}

// FuzzReadFrame checks the stream framing on arbitrary input.
func FuzzReadFrame(f *testing.F) {
	var stream []byte
	for _, m := range seedMessages() {
		stream = AppendFrame(stream, m.Encode())
	}
	f.Add(stream)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			body, err := ReadFrame(r, 1<<20)
			if err != nil {
				return
			}
			var fr WatchFrame
			_ = fr.Decode(body)
		}
	})
}

// TestWriteSeedCorpus writes the seed messages as fuzz corpus files (run
// with -update-corpus after changing the format).
func TestWriteSeedCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to rewrite testdata/fuzz/FuzzDecode")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, m := range seedMessages() {
		data := append([]byte{indexOf(m)}, m.Encode()...)
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestValidateRangeCompare: a range compare's end must sort after its key
// and fit a key's limit, carries no value, and no other target carries an
// end (the encoding would drop it).
func TestValidateRangeCompare(t *testing.T) {
	for name, c := range map[string]struct {
		cmp  Compare
		max  int
		want error
	}{
		"valid":            {Compare{Key: []byte("a/"), Target: CompareRangeEmpty, RangeEnd: []byte("a0")}, storage.MaxKeySize, nil},
		"one key":          {Compare{Key: []byte("a"), Target: CompareRangeEmpty, RangeEnd: []byte("a\x00")}, storage.MaxKeySize, nil},
		"end equals key":   {Compare{Key: []byte("a"), Target: CompareRangeEmpty, RangeEnd: []byte("a")}, storage.MaxKeySize, storage.ErrInvalidRange},
		"end before key":   {Compare{Key: []byte("b"), Target: CompareRangeEmpty, RangeEnd: []byte("a")}, storage.MaxKeySize, storage.ErrInvalidRange},
		"no end":           {Compare{Key: []byte("b"), Target: CompareRangeEmpty}, storage.MaxKeySize, storage.ErrInvalidRange},
		"end too large":    {Compare{Key: []byte("b"), Target: CompareRangeEmpty, RangeEnd: []byte("bbbb")}, 3, storage.ErrKeyTooLarge},
		"end on exists":    {Compare{Key: []byte("b"), Target: CompareExists, RangeEnd: []byte("c")}, storage.MaxKeySize, storage.ErrInvalidRange},
		"value on range":   {Compare{Key: []byte("b"), Target: CompareRangeEmpty, RangeEnd: []byte("c"), Value: []byte("v")}, storage.MaxKeySize, ErrInvalid},
		"empty range key":  {Compare{Target: CompareRangeEmpty, RangeEnd: []byte("c")}, storage.MaxKeySize, storage.ErrEmptyKey},
		"unknown target 5": {Compare{Key: []byte("b"), Target: 5}, storage.MaxKeySize, ErrInvalid},
	} {
		txn := Txn{If: []Compare{c.cmp}}
		err := txn.Validate(c.max)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

// TestFromStorageTxnCarriesRangeEnd: the client's conversion keeps the
// range end (and drops the value the target ignores).
func TestFromStorageTxnCarriesRangeEnd(t *testing.T) {
	got := FromStorageTxn(storage.Txn{If: []storage.Compare{
		{Key: []byte("a/"), Target: storage.CompareRangeEmpty, RangeEnd: []byte("a0"), Value: []byte("ignored")},
	}})
	want := Compare{Key: []byte("a/"), Target: CompareRangeEmpty, RangeEnd: []byte("a0")}
	if !reflect.DeepEqual(got.If[0], want) {
		t.Fatalf("converted %+v, want %+v", got.If[0], want)
	}
	if err := got.Validate(storage.MaxKeySize); err != nil {
		t.Fatal(err)
	}
}
