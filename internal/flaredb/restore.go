package flaredb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/flaredb/fsm"
	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
)

// ErrBadSnapshot marks a snapshot file that cannot be restored (truncated,
// corrupt, or not a flaredb snapshot).
var ErrBadSnapshot = fsm.ErrBadSnapshot

// SnapshotInfo describes a snapshot file (see InspectSnapshot).
type SnapshotInfo = fsm.SnapshotInfo

// InspectSnapshot reads and checks the whole snapshot file at path (framing,
// checksum, meta record) and describes it. It writes nothing.
func InspectSnapshot(path string) (SnapshotInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("flaredb: snapshot: %w", err)
	}
	defer f.Close()
	info, err := fsm.ReadSnapshotInfo(f)
	if err != nil {
		return info, fmt.Errorf("flaredb: snapshot %s: %w", path, err)
	}
	return info, nil
}

// RestoreOptions say what RestoreSnapshot builds.
type RestoreOptions struct {
	// SnapshotPath is a file written by `ultracloud flaredb snapshot save`
	// (client.SaveSnapshot).
	SnapshotPath string
	// DataDir is the member's data directory to create. It must not exist
	// or be empty.
	DataDir string
	// ID and ClusterID are the restored member's flaredb.id and
	// flaredb.clusterID.
	ID, ClusterID string
	// InitialVoters is every member of the new cluster; restore each of
	// them from the same file with the same list.
	InitialVoters []Peer
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
}

// RestoreResult describes a restored data directory.
type RestoreResult struct {
	DataDir string
	// Index is the Raft index the new cluster's log continues after.
	Index uint64
	// Revision and Compacted are the store's revisions in the snapshot;
	// the next write gets Revision+1.
	Revision, Compacted int64
	// Keys is the number of live keys.
	Keys uint64
	// SnapshotBytes is the size of the snapshot file.
	SnapshotBytes int64
}

// RestoreSnapshot builds a fresh member data directory from a snapshot, for
// disaster recovery (offline, like `etcdutl snapshot restore`). The
// directory holds the snapshot's state machine, a Raft snapshot of it at
// term 1 whose configuration is InitialVoters, and the data-dir guard of
// ID/ClusterID. A member started on it (with any initialVoters: existing
// state wins over bootstrap) joins the members restored the same way and
// they form a new cluster holding exactly the snapshot's data and history,
// continuing its revision counter. The old cluster's member addresses are
// replaced by InitialVoters.
//
// The file is checked completely before anything is written, and the
// directory is assembled beside DataDir and renamed into place at the end,
// so a failed restore leaves nothing behind.
func RestoreSnapshot(ctx context.Context, o RestoreOptions) (res RestoreResult, err error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := o.validate(); err != nil {
		return res, err
	}
	dir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return res, fmt.Errorf("flaredb: restore: data directory %q: %w", o.DataDir, err)
	}
	res.DataDir = dir
	existed, err := checkEmptyDir(dir)
	if err != nil {
		return res, err
	}

	// Pass 1: check the whole file before writing anything.
	info, err := InspectSnapshot(o.SnapshotPath)
	if err != nil {
		return res, fmt.Errorf("flaredb: restore: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	log.Info("snapshot checked", "path", o.SnapshotPath, "bytes", info.Bytes, "revision", info.Revision, "keys", info.Keys)

	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return res, fmt.Errorf("flaredb: restore: creating %s: %w", parent, err)
	}
	staging, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".restore-")
	if err != nil {
		return res, fmt.Errorf("flaredb: restore: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(staging)
		}
	}()
	if err := os.Chmod(staging, 0o700); err != nil {
		return res, fmt.Errorf("flaredb: restore: %w", err)
	}
	for _, d := range []string{filepath.Join(staging, "raft", "snapshots")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return res, fmt.Errorf("flaredb: restore: creating %s: %w", d, err)
		}
	}

	index, err := o.buildState(ctx, staging, log)
	if err != nil {
		return res, err
	}
	b, _ := json.Marshal(memberGuard{ClusterID: o.ClusterID, ID: o.ID})
	if err := writeFileSync(filepath.Join(staging, guardFile), append(b, '\n'), 0o600); err != nil {
		return res, fmt.Errorf("flaredb: restore: %w", err)
	}
	for _, d := range []string{filepath.Join(staging, "raft"), staging} {
		if err := syncDir(d); err != nil {
			return res, fmt.Errorf("flaredb: restore: %w", err)
		}
	}
	if existed {
		if err := os.Remove(dir); err != nil {
			return res, fmt.Errorf("flaredb: restore: %w", err)
		}
	}
	if err := os.Rename(staging, dir); err != nil {
		return res, fmt.Errorf("flaredb: restore: %w", err)
	}
	if err := syncDir(parent); err != nil {
		return res, fmt.Errorf("flaredb: restore: %w", err)
	}
	res.Index, res.Revision, res.Compacted, res.Keys, res.SnapshotBytes = index, info.Revision, info.Compacted, info.Keys, info.Bytes
	log.Info("data directory restored", "dir", dir, "member", o.ID, "cluster", o.ClusterID, "index", index, "revision", info.Revision)
	return res, nil
}

// buildState restores the state machine in staging/fsm from the snapshot
// file, replaces the member records with InitialVoters, and stores a Raft
// snapshot of the result. It returns the snapshot's index.
func (o *RestoreOptions) buildState(ctx context.Context, staging string, log *slog.Logger) (uint64, error) {
	f, err := fsm.Open(filepath.Join(staging, "fsm"), fsm.Options{Logger: log})
	if err != nil {
		return 0, fmt.Errorf("flaredb: restore: %w", err)
	}
	closed := false
	defer func() {
		if !closed {
			f.Close()
		}
	}()
	src, err := os.Open(o.SnapshotPath)
	if err != nil {
		return 0, fmt.Errorf("flaredb: restore: %w", err)
	}
	// Restore closes src.
	if err := f.Restore(ctxReader{ctx: ctx, r: src}); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("flaredb: restore: %s: %w", o.SnapshotPath, err)
	}

	// The old cluster's member addresses are meaningless to the new one.
	// Rewrite them as log entries right after the snapshot's index (term
	// 1, the new cluster's first term), as the leader would have.
	old, err := f.Members()
	if err != nil {
		return 0, fmt.Errorf("flaredb: restore: %w", err)
	}
	var cmds []fsm.Command
	for _, id := range slices.Sorted(maps.Keys(old)) {
		if !selfIn(o.InitialVoters, id) {
			cmds = append(cmds, fsm.Command{Kind: fsm.CmdRemoveMember, MemberID: id})
		}
	}
	for _, p := range o.InitialVoters {
		cmds = append(cmds, fsm.Command{Kind: fsm.CmdSetMember, MemberID: p.ID, APIAddr: p.APIAddress})
	}
	const term = 1
	index := f.AppliedIndex()
	logs := make([]*raft.Log, len(cmds))
	for i := range cmds {
		index++
		logs[i] = &raft.Log{Index: index, Term: term, Type: raft.LogCommand, Data: cmds[i].Encode()}
	}
	for i, r := range f.ApplyBatch(logs) {
		if e, ok := r.(error); ok {
			return 0, fmt.Errorf("flaredb: restore: recording member %s: %w", cmds[i].MemberID, e)
		}
	}
	if f.AppliedIndex() != index {
		return 0, fmt.Errorf("flaredb: restore: state machine at index %d, want %d", f.AppliedIndex(), index)
	}

	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(staging, "raft", "snapshots"), 1, newHCLog(log, "raft-snapshots"))
	if err != nil {
		return 0, fmt.Errorf("flaredb: restore: opening the snapshot store: %w", err)
	}
	var conf raft.Configuration
	for _, p := range o.InitialVoters {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddress)})
	}
	snap, err := f.Snapshot() // syncs Pebble
	if err != nil {
		return 0, fmt.Errorf("flaredb: restore: %w", err)
	}
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, term, conf, index, addrEncoder{})
	if err != nil {
		snap.Release()
		return 0, fmt.Errorf("flaredb: restore: creating the raft snapshot: %w", err)
	}
	err = snap.Persist(sink)
	snap.Release()
	if err != nil {
		return 0, fmt.Errorf("flaredb: restore: writing the raft snapshot: %w", err)
	}
	closed = true
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("flaredb: restore: %w", err)
	}
	return index, nil
}

func (o *RestoreOptions) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("flaredb: restore: "+format, args...))
	}
	checkID := func(what, id string) {
		if id == "" {
			bad("%s is empty", what)
		} else if len(id) > wire.MaxIDLen {
			bad("%s %q is longer than %d bytes", what, id, wire.MaxIDLen)
		}
	}
	if o.SnapshotPath == "" {
		bad("no snapshot file given")
	}
	if o.DataDir == "" {
		bad("no data directory given")
	}
	checkID("member ID", o.ID)
	checkID("cluster ID", o.ClusterID)
	switch n := len(o.InitialVoters); {
	case n == 0:
		bad("no initial voters given: list every member of the new cluster (id=raftAddress=apiAddress)")
	case n != 1 && n != 3 && n != 5:
		bad("%d initial voters: a cluster starts with 1, 3 or 5 (add more later with `ultracloud flaredb member add`)", n)
	}
	seen := map[string]bool{}
	for _, p := range o.InitialVoters {
		checkID("initial voter ID", p.ID)
		for _, a := range [][2]string{{"raft", p.RaftAddress}, {"api", p.APIAddress}} {
			if err := checkPeerAddr(a[1]); err != nil {
				bad("initial voter %q %s address %q: %v", p.ID, a[0], a[1], err)
			}
		}
		if seen[p.ID] {
			bad("initial voter %q is listed twice", p.ID)
		}
		seen[p.ID] = true
	}
	if o.ID != "" && len(o.InitialVoters) > 0 && !seen[o.ID] {
		bad("the initial voters do not list this member %q", o.ID)
	}
	return errors.Join(errs...)
}

// checkPeerAddr checks an address other members dial.
func checkPeerAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("not host:port (e.g. 10.0.0.1:7710)")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q must be a number from 1 to 65535", port)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		return errors.New("not an address peers can dial: give a routable host")
	}
	return nil
}

// checkEmptyDir accepts a missing or empty directory and reports whether it
// exists.
func checkEmptyDir(dir string) (bool, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("flaredb: restore: %w", err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("flaredb: restore: %s exists and is not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("flaredb: restore: %w", err)
	}
	if len(ents) > 0 {
		return false, fmt.Errorf("flaredb: restore: %s is not empty (it may hold a member's data): give a new directory, or move it away first", dir)
	}
	return true, nil
}

func writeFileSync(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// addrEncoder encodes peers as the network transport does (the address);
// FileSnapshotStore.Create needs it for the legacy peers field.
type addrEncoder struct{ raft.Transport }

func (addrEncoder) EncodePeer(_ raft.ServerID, a raft.ServerAddress) []byte { return []byte(a) }

// ctxReader stops reading once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.ReadCloser
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (c ctxReader) Close() error { return c.r.Close() }
