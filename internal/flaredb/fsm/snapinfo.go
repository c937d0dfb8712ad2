package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// SnapshotInfo describes a snapshot stream (see the format at snapMagic).
type SnapshotInfo struct {
	// AppliedIndex and AppliedTerm are the Raft position of the state.
	AppliedIndex, AppliedTerm uint64
	// Revision and Compacted are the store's current and compacted
	// revisions.
	Revision, Compacted int64
	// Keys counts the live keys; Records every record of the stream.
	Keys, Records uint64
	// Bytes is the stream's length.
	Bytes int64
	// Members are the API addresses recorded for members, by ID.
	Members map[string]string
}

// ReadSnapshotInfo reads a whole snapshot stream and checks it as Restore
// would (magic, record framing, key order, trailer count, checksum, meta
// record) without writing anything. Errors wrap ErrBadSnapshot, or are the
// reader's own.
func ReadSnapshotInfo(r io.Reader) (SnapshotInfo, error) {
	cr := &countingReader{r: r}
	br := bufio.NewReaderSize(cr, 64<<10)
	info := SnapshotInfo{Members: map[string]string{}}
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(br, magic); err != nil || !bytes.Equal(magic, snapMagic) {
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return info, err
		}
		return info, fmt.Errorf("%w: not a flaredb snapshot (missing magic %q)", ErrBadSnapshot, snapMagic)
	}
	crc := crc32.New(castagnoli)
	tr := &teeByteReader{r: br, h: crc}
	var n uint64
	var haveMeta bool
	var prev []byte
	for {
		kl, err := binary.ReadUvarint(tr)
		if err != nil {
			return info, fmt.Errorf("%w: truncated at record %d (key length: %v)", ErrBadSnapshot, n, err)
		}
		if kl == 0 {
			break
		}
		if kl > maxSnapKey {
			return info, fmt.Errorf("%w: record %d has a key of %d bytes", ErrBadSnapshot, n, kl)
		}
		key := make([]byte, kl)
		if _, err := io.ReadFull(tr, key); err != nil {
			return info, fmt.Errorf("%w: truncated at record %d (key: %v)", ErrBadSnapshot, n, err)
		}
		if prev != nil && bytes.Compare(prev, key) >= 0 {
			return info, fmt.Errorf("%w: record %d is out of order", ErrBadSnapshot, n)
		}
		prev = key
		vl, err := binary.ReadUvarint(tr)
		if err != nil || vl > maxSnapValue {
			return info, fmt.Errorf("%w: truncated or bad value length at record %d", ErrBadSnapshot, n)
		}
		// Grow with the data read, so a corrupt length in a short file
		// does not allocate up to maxSnapValue.
		var vb bytes.Buffer
		if got, err := io.CopyN(&vb, tr, int64(vl)); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return info, fmt.Errorf("%w: truncated at record %d (value: %d of %d bytes: %v)", ErrBadSnapshot, n, got, vl, err)
		}
		val := vb.Bytes()
		switch {
		case bytes.Equal(key, metaRestoringKey):
			return info, fmt.Errorf("%w: snapshot holds a restore marker", ErrBadSnapshot)
		case bytes.Equal(key, metaStateKey):
			m, err := decodeMeta(val)
			if err != nil {
				return info, fmt.Errorf("%w: meta record: %v", ErrBadSnapshot, err)
			}
			info.AppliedIndex, info.AppliedTerm, info.Revision, info.Compacted = m.appliedIndex, m.appliedTerm, m.rev, m.compacted
			haveMeta = true
		case key[0] == prefixState:
			info.Keys++
		case key[0] == prefixMember:
			info.Members[string(key[1:])] = string(val)
		}
		n++
	}
	count, err := binary.ReadUvarint(tr)
	if err != nil || count != n {
		return info, fmt.Errorf("%w: trailer says %d records, read %d (truncated or corrupt)", ErrBadSnapshot, count, n)
	}
	sum := crc.Sum32()
	var want [4]byte
	if _, err := io.ReadFull(br, want[:]); err != nil {
		return info, fmt.Errorf("%w: truncated before the checksum", ErrBadSnapshot)
	}
	if binary.BigEndian.Uint32(want[:]) != sum {
		return info, fmt.Errorf("%w: checksum mismatch (the file is corrupt)", ErrBadSnapshot)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err != nil {
			return info, err
		}
		return info, fmt.Errorf("%w: trailing data after the checksum", ErrBadSnapshot)
	}
	if n > 0 && !haveMeta {
		return info, fmt.Errorf("%w: no meta record", ErrBadSnapshot)
	}
	info.Records = n
	info.Bytes = cr.n
	return info, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
