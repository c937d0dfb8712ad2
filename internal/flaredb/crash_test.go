package flaredb_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/client"
	"github.com/ultracloud/ultracloud/internal/flaredb/flaredbtest"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/storetest"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// TestCrashRecovery runs storetest's crash suite against a 3-member
// cluster run in one process: SIGKILL takes the whole cluster down during
// heavy writes, every member restarts from its own data (nothing was shut
// down), every acknowledged write must be there, and every member's state
// machine must replay the log to the same revision.
func TestCrashRecovery(t *testing.T) {
	var c *flaredbtest.Cluster // the test's; the child makes its own
	storetest.RunCrash(t, storetest.Crash{
		KillAfter: 500,
		Prepare: func(t *testing.T) string {
			c = flaredbtest.New(t, 3, flaredbtest.Options{})
			layout, err := json.Marshal(c.Layout())
			if err != nil {
				t.Fatal(err)
			}
			return string(layout)
		},
		Open: func(t testing.TB, layout string) storage.Store {
			if c == nil {
				var l flaredbtest.Layout
				if err := json.Unmarshal([]byte(layout), &l); err != nil {
					t.Fatalf("layout: %v", err)
				}
				c = flaredbtest.FromLayout(t, l, flaredbtest.Options{})
			}
			c.StartAll()
			s, err := client.NewStore(c.Client(), "")
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Recovered: func(t *testing.T, _ storage.Store, rev int64) {
			for _, m := range c.Members {
				testkit.Eventually(t, 20*time.Second, m.ID+" to apply everything", func() bool {
					st, err := m.Server.Status()
					return err == nil && st.Revision >= rev
				})
			}
		},
	})
}
