package chainfire

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
)

// Internals for the tests of package chainfire_test. Those tests run
// members from chainfiretest, which imports this package, so they cannot
// be in it; these names exist only in the test binary.

// SetDefragHook sets the function the defragmentation policy calls while
// it holds the cluster-wide lock (before Run).
func SetDefragHook(s *Server, hook func(lockCtx context.Context)) { s.defragHook = hook }

// GuardRecord, ReadGuard and IssueMemberCert are the data directory guard
// and the member certificate issuer; the file names are the ones in the
// data directory's tls/.
type GuardRecord = guardRecord

var (
	ReadGuard       = readGuard
	IssueMemberCert = issueMemberCert
	MemberCertName  = memberCertName
	MemberKeyName   = memberKeyName
	CACertName      = caCertName
	CAKeyName       = caKeyName
)

// IssueAutoCert is issueAutoCert.
func IssueAutoCert(s *Server) (caCert, cert, key string, err error) { return s.issueAutoCert() }

// DefragDue and Jitter are the policy's threshold and timer functions.
var (
	DefragDue = defragDue
	Jitter    = jitter
)

// testLogger is for this package's own tests: it discards everything.
func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// contains reports whether err's message has every part.
func contains(err error, parts ...string) bool {
	if err == nil {
		return false
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			return false
		}
	}
	return true
}

// ErrorContains is contains, for package chainfire_test.
var ErrorContains = contains

func writeTestFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}
