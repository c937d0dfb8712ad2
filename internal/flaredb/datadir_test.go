package flaredb_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ultracloud/ultracloud/internal/flaredb"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
)

func TestDataDirGuard(t *testing.T) {
	c := flaredbtest.StartCluster(t, 1, flaredbtest.Options{})
	c.Stop(0)
	cfg := c.Config(0, c.Voters(), nil)
	cfg.ClusterID = "other"
	srv, err := flaredb.New(cfg, flaredb.Options{RaftListener: flaredbtest.Listen(t, c.Members[0].RaftAddr), APIListener: flaredbtest.Listen(t, c.Members[0].APIAddr)})
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(t.Context())
	if !errors.Is(err, flaredb.ErrDataDirMismatch) || !strings.Contains(err.Error(), "flaredb.clusterID") {
		t.Fatalf("Run with another cluster's data dir: %v", err)
	}
}
