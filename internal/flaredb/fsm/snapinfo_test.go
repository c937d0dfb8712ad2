package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// snapshotBytes returns a snapshot of a small FSM: 7 live keys, a compaction,
// a member record.
func snapshotBytes(t testing.TB) ([]byte, *FSM) {
	t.Helper()
	a := openFSM(t, "")
	var cmds []Command
	for i := range 30 {
		cmds = append(cmds, txns(5, wire.Txn{Then: []wire.Op{put(fmt.Sprintf("k%02d", i%7), fmt.Sprint(i))}}))
	}
	cmds = append(cmds, Command{Kind: CmdCompact, Revision: 10}, Command{Kind: CmdSetMember, MemberID: "m1", APIAddr: "a:1"})
	apply(t, a, logs(1, cmds...))
	var buf bytes.Buffer
	if err := a.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), a
}

func TestReadSnapshotInfo(t *testing.T) {
	b, a := snapshotBytes(t)
	info, err := ReadSnapshotInfo(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	st := a.Stats()
	if info.AppliedIndex != st.AppliedIndex || info.AppliedTerm != 1 || info.Revision != st.Revision || info.Compacted != st.Compacted || st.Compacted == 0 ||
		info.Keys != 7 || info.Bytes != int64(len(b)) || info.Members["m1"] != "a:1" || len(info.Members) != 1 {
		t.Fatalf("info %+v, fsm %+v", info, st)
	}
	// Every strict prefix, any flipped byte and trailing data are refused
	// as bad snapshots.
	for i := range len(b) {
		if _, err := ReadSnapshotInfo(bytes.NewReader(b[:i])); !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("prefix of %d/%d bytes: %v", i, len(b), err)
		}
	}
	for i := range len(b) {
		if _, err := ReadSnapshotInfo(bytes.NewReader(flip(b, i))); !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("flipped byte %d/%d: %v", i, len(b), err)
		}
	}
	if _, err := ReadSnapshotInfo(bytes.NewReader(append(bytes.Clone(b), 0))); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("trailing byte: %v", err)
	}
	// The empty store's snapshot is valid.
	var empty bytes.Buffer
	if err := openFSM(t, "").WriteSnapshot(&empty); err != nil {
		t.Fatal(err)
	}
	if info, err := ReadSnapshotInfo(&empty); err != nil || info.Records != 0 || info.Revision != 0 {
		t.Fatalf("empty snapshot: %+v %v", info, err)
	}
}

// FuzzReadSnapshotInfo: the checker never panics on any file, and whatever
// it accepts Restore accepts too, with the revisions it reported.
func FuzzReadSnapshotInfo(f *testing.F) {
	b, _ := snapshotBytes(f)
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add(append(bytes.Clone(snapMagic), 0x05, 'm', '/', 's', 't', 'a'))
	f.Add(append(bytes.Clone(snapMagic), 0x01, 's', 0xff, 0xff, 0xff, 0xff, 0x03))
	target, err := Open(f.TempDir(), Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { target.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := ReadSnapshotInfo(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("error %v does not wrap ErrBadSnapshot", err)
			}
			return
		}
		if err := target.Restore(readCloser(data)); err != nil {
			t.Fatalf("checked snapshot does not restore: %v", err)
		}
		if st := target.Stats(); st.Revision != info.Revision || st.AppliedIndex != info.AppliedIndex || st.Compacted != info.Compacted {
			t.Fatalf("restored %+v, checker said %+v", st, info)
		}
	})
}
