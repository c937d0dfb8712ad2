// Command candidate is a test-only leader-election candidate for
// test/chainfire: it campaigns in a chainfire election through
// internal/runtime/coord and, while it leads, performs writes fenced on its
// leadership, reporting every step as one line on stdout:
//
//	READY name=N
//	CAMPAIGN name=N
//	LEAD name=N rev=R                 elected; R is the fencing revision
//	WORK name=N rev=R seq=S           about to work (sleep -work), then write
//	WROTE name=N rev=R seq=S modrev=M the fenced write committed at M
//	FENCED name=N rev=R seq=S         the fenced write was refused
//	WRITEERR name=N rev=R seq=S err=E outcome unknown
//	LOST name=N rev=R cause=C         stopped acting as leader
//	CAMPAIGNERR name=N err=E
//
// The write is a transaction that puts <prefix>/<rev>/<name>/<seq> only if
// the candidate's leader key still exists with creation revision R
// (Leadership.IsLeaderCmp). It is deliberately not bound to the leadership
// context and is issued after the work without looking at it again: a
// candidate stopped during the work and resumed after losing its lease
// sends the write anyway, and the fence is what must refuse it.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ultracloud/ultracloud/internal/runtime/coord"
)

func main() {
	var (
		endpoints = flag.String("endpoints", "", "comma-separated chainfire endpoints (host:port)")
		caFile    = flag.String("cacert", "", "cluster CA certificate")
		name      = flag.String("name", "", "candidate name")
		election  = flag.String("election", "fencing-test", "election name")
		ttl       = flag.Duration("ttl", 3*time.Second, "leadership lease TTL")
		work      = flag.Duration("work", 500*time.Millisecond, "work before each fenced write")
		prefix    = flag.String("prefix", "fenced", "key prefix of the fenced writes")
	)
	flag.Parse()
	if err := run(*endpoints, *caFile, *name, *election, *prefix, *ttl, *work); err != nil {
		fmt.Fprintln(os.Stderr, "candidate:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) {
	// One write per line: stdout is a pipe the test reads line by line.
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func run(endpoints, caFile, name, election, prefix string, ttl, work time.Duration) error {
	if endpoints == "" || caFile == "" || name == "" {
		return errors.New("-endpoints, -cacert and -name are required")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", caFile)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            strings.Split(endpoints, ","),
		TLS:                  &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	c := coord.New(cli, slog.New(slog.NewTextHandler(io.Discard, nil)))
	el, err := c.Election(election, ttl)
	if err != nil {
		return err
	}
	say("READY name=%s", name)
	for ctx.Err() == nil {
		say("CAMPAIGN name=%s", name)
		lead, err := el.Campaign(ctx, name)
		if err != nil {
			if ctx.Err() == nil {
				say("CAMPAIGNERR name=%s err=%q", name, err.Error())
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		rev := lead.Revision()
		say("LEAD name=%s rev=%d", name, rev)
		for seq := 1; ; seq++ {
			if err := lead.Context().Err(); err != nil {
				say("LOST name=%s rev=%d cause=%q", name, rev, context.Cause(lead.Context()).Error())
				break
			}
			say("WORK name=%s rev=%d seq=%d", name, rev, seq)
			time.Sleep(work)
			key := fmt.Sprintf("%s/%020d/%s/%06d", prefix, rev, name, seq)
			tctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			resp, err := cli.Txn(tctx).If(lead.IsLeaderCmp()).Then(clientv3.OpPut(key, name)).Commit()
			cancel()
			if err != nil {
				say("WRITEERR name=%s rev=%d seq=%d err=%q", name, rev, seq, err.Error())
				continue
			}
			if !resp.Succeeded {
				say("FENCED name=%s rev=%d seq=%d", name, rev, seq)
				say("LOST name=%s rev=%d cause=%q", name, rev, "fenced write refused")
				break
			}
			say("WROTE name=%s rev=%d seq=%d modrev=%d", name, rev, seq, resp.Header.Revision)
		}
		rctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_ = lead.Resign(rctx)
		cancel()
	}
	return nil
}
