package cli

import (
	"context"

	"github.com/ultracloud/ultracloud/internal/chainfire"
	chainfirecli "github.com/ultracloud/ultracloud/internal/cli/chainfire"
	flaredbcli "github.com/ultracloud/ultracloud/internal/cli/flaredb"
	"github.com/ultracloud/ultracloud/internal/flaredb"
)

// The offline verbs of chainfire and flaredb (checking a snapshot file,
// building a member's data directory from one) need the member's own
// storage code. A component's CLI package may import only its client
// packages, so the shell, which links every member anyway to run `up`,
// passes these in.

func chainfireOffline() chainfirecli.Offline {
	return chainfirecli.Offline{Restore: chainfire.SnapshotRestore}
}

func flaredbOffline() flaredbcli.Offline {
	return flaredbcli.Offline{
		Inspect: func(path string) (flaredbcli.SnapshotFile, error) {
			si, err := flaredb.InspectSnapshot(path)
			return flaredbcli.SnapshotFile{Bytes: si.Bytes, Revision: si.Revision, Compacted: si.Compacted, Keys: si.Keys}, err
		},
		Restore: func(ctx context.Context, r flaredbcli.RestoreRequest) (flaredbcli.RestoreResult, error) {
			res, err := flaredb.RestoreSnapshot(ctx, flaredb.RestoreOptions{
				SnapshotPath: r.SnapshotPath, DataDir: r.DataDir, ID: r.ID, ClusterID: r.ClusterID, InitialVoters: r.InitialVoters,
			})
			return flaredbcli.RestoreResult{DataDir: res.DataDir, Revision: res.Revision, Keys: res.Keys}, err
		},
	}
}
