package fsm

import (
	"fmt"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// Commands are the payloads of flaredb's Raft log entries. Their encoding is
// part of the on-disk format (log and snapshots): never renumber, only add.
//
//	version byte | kind byte | fields
type CommandKind byte

const (
	// CmdTxns carries transactions evaluated in order, each write
	// transaction taking the next revision.
	CmdTxns CommandKind = 1
	// CmdCompact discards history below a revision.
	CmdCompact CommandKind = 2
	// CmdExpire deletes keys whose TTL ran out (proposed by the leader).
	CmdExpire CommandKind = 3
	// CmdSetMember records a member's API address.
	CmdSetMember CommandKind = 4
	// CmdRemoveMember forgets a member's API address.
	CmdRemoveMember CommandKind = 5
)

const commandVersion byte = 1

// MaxExpireKeys bounds one expire command, so its revision carries at most
// as many events as a transaction.
const MaxExpireKeys = storage.MaxTxnOps

// ExpireKey names a key to expire if it still has this mod revision.
type ExpireKey struct {
	Key []byte
	Mod int64
}

// Command is a decoded log entry payload.
type Command struct {
	Kind CommandKind
	// Timestamp is the proposing leader's clock in unix ms (CmdTxns,
	// CmdExpire). TTL expiry times derive from it.
	Timestamp int64
	Txns      []wire.Txn  // CmdTxns; keys are raw (namespace-prefixed)
	Revision  int64       // CmdCompact
	Expire    []ExpireKey // CmdExpire
	MemberID  string      // CmdSetMember, CmdRemoveMember
	APIAddr   string      // CmdSetMember
}

// Encode returns the command's log payload.
func (c *Command) Encode() []byte {
	e := wire.NewEncoder(nil)
	e.Byte(commandVersion)
	e.Byte(byte(c.Kind))
	switch c.Kind {
	case CmdTxns:
		e.Varint(c.Timestamp)
		e.Uvarint(uint64(len(c.Txns)))
		for i := range c.Txns {
			e.Txn(&c.Txns[i])
		}
	case CmdCompact:
		e.Varint(c.Revision)
	case CmdExpire:
		e.Varint(c.Timestamp)
		e.Uvarint(uint64(len(c.Expire)))
		for _, k := range c.Expire {
			e.Blob(k.Key)
			e.Varint(k.Mod)
		}
	case CmdSetMember:
		e.String(c.MemberID)
		e.String(c.APIAddr)
	case CmdRemoveMember:
		e.String(c.MemberID)
	}
	return e.Bytes()
}

// maxTxnsPerCommand bounds the transactions in one command.
const maxTxnsPerCommand = 1 << 16

// DecodeCommand decodes a log payload. Errors wrap wire.ErrMalformed or a
// storage limit sentinel.
func DecodeCommand(b []byte) (Command, error) {
	d := wire.NewDecoder(b)
	if v := d.Byte("command version"); d.Err() == nil && v != commandVersion {
		return Command{}, fmt.Errorf("%w: command version %d", wire.ErrMalformed, v)
	}
	c := Command{Kind: CommandKind(d.Byte("command kind"))}
	switch c.Kind {
	case CmdTxns:
		c.Timestamp = d.NonNegative("timestamp")
		n := d.Count("txns", maxTxnsPerCommand, 3, nil)
		c.Txns = make([]wire.Txn, n)
		for i := range c.Txns {
			c.Txns[i] = d.Txn(wire.MaxRawKeySize)
		}
	case CmdCompact:
		c.Revision = d.NonNegative("revision")
	case CmdExpire:
		c.Timestamp = d.NonNegative("timestamp")
		n := d.Count("expire keys", MaxExpireKeys, 2, nil)
		c.Expire = make([]ExpireKey, n)
		for i := range c.Expire {
			c.Expire[i] = ExpireKey{Key: d.Blob("expire key", wire.MaxRawKeySize, storage.ErrKeyTooLarge), Mod: d.NonNegative("expire mod")}
			if d.Err() == nil && len(c.Expire[i].Key) == 0 {
				d.Fail(fmt.Errorf("expire key %d: %w", i, storage.ErrEmptyKey))
			}
		}
	case CmdSetMember:
		c.MemberID = d.String("member id", wire.MaxIDLen)
		c.APIAddr = d.String("api address", wire.MaxAddrLen)
	case CmdRemoveMember:
		c.MemberID = d.String("member id", wire.MaxIDLen)
	default:
		if d.Err() == nil {
			return Command{}, fmt.Errorf("%w: unknown command kind %d", wire.ErrMalformed, c.Kind)
		}
	}
	if err := d.Finish(); err != nil {
		return Command{}, fmt.Errorf("decode command: %w", err)
	}
	return c, nil
}
