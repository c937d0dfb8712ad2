package chainfire

import (
	"fmt"
	"os"
	"strings"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// SnapshotRestore creates a member data directory from a snapshot file, for
// member memberName of a new cluster whose members are initialCluster
// (name=peerURL entries) with cluster token token. dataDir must not exist
// or be empty. Every member of the new cluster is restored from the same
// snapshot, each into its own data directory, then started with
// initialState new and the same initialCluster and clusterToken. The
// restored cluster has a new cluster ID; its members and leases are those
// of initialCluster, keys and revisions those of the snapshot.
func SnapshotRestore(snapshotPath, dataDir, memberName string, initialCluster []string, token string) error {
	cfg := Config{Name: memberName, InitialCluster: initialCluster, ClusterToken: token}
	if !memberNameRE.MatchString(memberName) {
		return fmt.Errorf("%w: member name %q is not valid", ErrSnapshot, memberName)
	}
	if token == "" {
		return fmt.Errorf("%w: the cluster token must not be empty", ErrSnapshot)
	}
	members := cfg.members()
	for i, ent := range initialCluster {
		name, raw, ok := strings.Cut(ent, "=")
		if !ok || name == "" {
			return fmt.Errorf("%w: initialCluster[%d] %q is not name=peerURL", ErrSnapshot, i, ent)
		}
		if _, err := parseMemberURL(strings.TrimSpace(raw), false); err != nil {
			return fmt.Errorf("%w: initialCluster[%d]: %v", ErrSnapshot, i, err)
		}
	}
	peerURL, ok := members[memberName]
	if !ok {
		return fmt.Errorf("%w: initialCluster does not list member %q", ErrSnapshot, memberName)
	}
	if _, err := os.Stat(snapshotPath); err != nil {
		return fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snapshotPath,
		Name:                memberName,
		OutputDataDir:       dataDir,
		PeerURLs:            []string{peerURL},
		InitialCluster:      initialClusterString(initialCluster),
		InitialClusterToken: token,
	})
	if err != nil {
		return fmt.Errorf("%w: restoring %s into %s: %w", ErrSnapshot, snapshotPath, dataDir, err)
	}
	if err := os.Chmod(dataDir, 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	return writeGuard(dataDir, guardRecord{ClusterToken: token, MemberName: memberName})
}
