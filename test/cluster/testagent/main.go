// Command testagent is the host agent of test/cluster's node-identity
// test: it obtains its node's identity with internal/runtime/nodeid
// exactly as a worker node does (the credential in its data directory, or
// else enrollment with the join token file), then, a bounded number of
// times, calls whoami, reads a control-plane node's status, and tries what
// the node role must refuse (listing users, creating a project), printing
// one JSON line per round on stdout for the test to read.
//
// It is a test fixture: no behaviour of its own beyond reporting what the
// API answered.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/nodeid"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// Round is one line of output: the HTTP status of each call (0 when the
// call failed before an answer, e.g. the token exchange was refused, with
// the error in Errors).
type Round struct {
	Round         int               `json:"round"`
	Principal     string            `json:"principal,omitempty"`
	WhoAmI        int               `json:"whoami"`
	Status        int               `json:"status"`
	ListUsers     int               `json:"listUsers"`
	CreateProject int               `json:"createProject"`
	KeyRefused    bool              `json:"keyRefused,omitempty"`
	Errors        map[string]string `json:"errors,omitempty"`
}

func main() {
	os.Exit(run())
}

func run() int {
	node := flag.String("node", "", "node name")
	dataDir := flag.String("data-dir", "", "data directory (holds node-credential)")
	endpoints := flag.String("endpoints", "", "control-plane API base URLs, comma-separated")
	joinFile := flag.String("join-token-file", "", "join token file")
	statusOf := flag.String("status-endpoint", "", "API base URL whose /v1/status to read (default the endpoint the identity uses)")
	rounds := flag.Int("rounds", 600, "how many rounds to run")
	interval := flag.Duration("interval", 200*time.Millisecond, "pause between rounds")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	eps := strings.Split(*endpoints, ",")
	id, err := nodeid.New(nodeid.Config{Node: *node, DataDir: *dataDir, Endpoints: eps, JoinTokenFile: *joinFile, Logger: log,
		MinBackoff: 200 * time.Millisecond, MaxBackoff: 2 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testagent:", err)
		return 2
	}
	octx, cancel := context.WithTimeout(ctx, 60*time.Second)
	_, err = id.Obtain(octx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testagent:", err)
		return 1
	}
	if *statusOf == "" {
		// Tokens carry their issuer's URL; unless the control plane sets
		// one iam.issuer, only the node that issued them accepts them.
		*statusOf = id.Endpoint()
	}
	api1, err := client.New(client.Config{Endpoint: id.Endpoint(), TokenSource: id, UserAgent: "testagent"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testagent:", err)
		return 2
	}
	statusAPI, err := client.New(client.Config{Endpoint: *statusOf, TokenSource: id, UserAgent: "testagent"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testagent:", err)
		return 2
	}
	enc := json.NewEncoder(os.Stdout)
	for i := range *rounds {
		r := Round{Round: i, Errors: map[string]string{}}
		call := func(what string, f func(context.Context) error) int {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			err := f(cctx)
			if err == nil {
				return 200
			}
			r.Errors[what] = err.Error()
			if errors.Is(err, nodeid.ErrKeyRefused) {
				r.KeyRefused = true
			}
			if p, ok := client.ProblemOf(err); ok {
				return p.Status
			}
			return 0
		}
		r.WhoAmI = call("whoami", func(ctx context.Context) error {
			me, err := iamclient.New(api1).WhoAmI(ctx)
			if err == nil {
				r.Principal = me.Principal
			}
			return err
		})
		r.Status = call("status", func(ctx context.Context) error { _, err := statusAPI.Status(ctx); return err })
		r.ListUsers = call("listUsers", func(ctx context.Context) error {
			_, err := api1.Resources(iamv1.UserCollection, "").List(ctx, client.ListOptions{})
			return err
		})
		r.CreateProject = call("createProject", func(ctx context.Context) error {
			name := fmt.Sprintf("agent-%d-%d", os.Getpid(), i)
			_, err := api1.Resources(iamv1.ProjectCollection, "").Create(ctx,
				&api.Object{Metadata: api.ObjectMeta{Name: name}, Spec: json.RawMessage(`{}`)})
			return err
		})
		if len(r.Errors) == 0 {
			r.Errors = nil
		}
		if err := enc.Encode(r); err != nil {
			return 1
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(*interval):
		}
	}
	return 0
}
