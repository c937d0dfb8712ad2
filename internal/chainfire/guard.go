package chainfire

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// GuardFileName is the file in DataDir that records which cluster and
// member the directory belongs to.
const GuardFileName = "chainfire-cluster.json"

// guardRecord is the content of GuardFileName.
type guardRecord struct {
	ClusterToken string `json:"clusterToken"`
	ClusterID    string `json:"clusterID,omitempty"`
	MemberName   string `json:"memberName"`
	MemberID     string `json:"memberID,omitempty"`
}

func readGuard(dataDir string) (guardRecord, bool, error) {
	var rec guardRecord
	b, err := os.ReadFile(filepath.Join(dataDir, GuardFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("chainfire: reading data directory guard: %w", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, false, fmt.Errorf("chainfire: data directory guard %s is damaged (%v); if this directory is really this member's, fix or remove the file", filepath.Join(dataDir, GuardFileName), err)
	}
	return rec, true, nil
}

func writeGuard(dataDir string, rec guardRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("chainfire: encoding data directory guard: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dataDir, GuardFileName), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("chainfire: writing data directory guard: %w", err)
	}
	return nil
}

// memberInitialized reports whether etcd has member data in dataDir (its
// write-ahead log exists), i.e. the directory is bound to a cluster.
func memberInitialized(dataDir string) bool {
	entries, err := os.ReadDir(filepath.Join(dataDir, "member", "wal"))
	return err == nil && len(entries) > 0
}

// checkGuard runs before the member starts. It refuses a data directory
// holding another cluster's or member's data, and records this cluster and
// member in a directory that holds none yet.
func checkGuard(dataDir, token, name string) error {
	rec, ok, err := readGuard(dataDir)
	if err != nil {
		return err
	}
	initialized := memberInitialized(dataDir)
	if ok && initialized && (rec.ClusterToken != token || rec.MemberName != name) {
		return fmt.Errorf("%w: data directory %s belongs to cluster %q member %q; this config is for cluster %q member %q: "+
			"point dataDir at this member's own directory, or correct clusterToken and name (to rejoin under a new identity, remove the member and empty the directory)",
			ErrWrongCluster, dataDir, rec.ClusterToken, rec.MemberName, token, name)
	}
	if ok && initialized {
		return nil
	}
	// Not bound yet (first start, or an earlier first start that failed
	// before etcd wrote anything): record who this directory is for.
	return writeGuard(dataDir, guardRecord{ClusterToken: token, MemberName: name})
}

// confirmGuard runs once the member is ready and records the cluster and
// member IDs etcd reports, or refuses if the directory's data now belongs
// to another cluster than the one it was bound to.
func confirmGuard(dataDir, token, name, clusterID, memberID string) error {
	rec, ok, err := readGuard(dataDir)
	if err != nil {
		return err
	}
	if !ok {
		rec = guardRecord{ClusterToken: token, MemberName: name}
	}
	if rec.ClusterID != "" && rec.ClusterID != clusterID {
		return fmt.Errorf("%w: data directory %s was bound to cluster ID %s (token %q) but its member data now belongs to cluster ID %s; "+
			"the member/ directory was replaced: restore the right data or remove %s if the replacement is intended",
			ErrWrongCluster, dataDir, rec.ClusterID, rec.ClusterToken, clusterID, GuardFileName)
	}
	if rec.ClusterID == clusterID && rec.MemberID == memberID {
		return nil
	}
	rec.ClusterID, rec.MemberID = clusterID, memberID
	return writeGuard(dataDir, rec)
}
