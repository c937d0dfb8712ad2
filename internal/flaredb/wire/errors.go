package wire

import (
	"context"
	"errors"
	"fmt"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// flaredb's sentinel errors. Test with errors.Is; never match the text.
var (
	ErrInternal        = errors.New("flaredb: internal error")
	ErrMalformed       = errors.New("flaredb: malformed request")
	ErrVersion         = errors.New("flaredb: unsupported protocol version")
	ErrRequestTooLarge = errors.New("flaredb: request too large")
	ErrInvalid         = errors.New("flaredb: invalid request")
	ErrBadNamespace    = errors.New("flaredb: invalid namespace")
	ErrWrongCluster    = errors.New("flaredb: wrong cluster")
	// ErrNotLeader: the member is not the leader and did not forward; the
	// request was not applied. Error.Leader names the leader when known.
	ErrNotLeader = errors.New("flaredb: not the leader")
	// ErrNoLeader: the cluster has no leader right now; not applied.
	ErrNoLeader = errors.New("flaredb: no leader")
	// ErrShuttingDown: the member is stopping; not applied.
	ErrShuttingDown = errors.New("flaredb: member shutting down")
	// ErrUnavailable: a read could not be served in time (e.g. the member
	// could not confirm it is up to date). Nothing was written.
	ErrUnavailable = errors.New("flaredb: unavailable")
	// ErrUnknownOutcome: a write was proposed but its fate is unknown (for
	// example leadership was lost before it committed). It may or may not
	// have been applied; clients must not blindly retry it.
	ErrUnknownOutcome = errors.New("flaredb: write outcome unknown")
	// ErrUnknownMember: a membership operation named a member that is not
	// in the configuration.
	ErrUnknownMember = errors.New("flaredb: unknown member")
)

// Code is the stable machine-readable error code carried on the wire.
type Code uint16

// Error codes. Values are part of the protocol: never renumber.
const (
	CodeInternal        Code = 1
	CodeMalformed       Code = 2
	CodeVersion         Code = 3
	CodeRequestTooLarge Code = 4
	CodeInvalid         Code = 5
	CodeBadNamespace    Code = 6
	CodeWrongCluster    Code = 7
	CodeNotLeader       Code = 8
	CodeNoLeader        Code = 9
	CodeShuttingDown    Code = 10
	CodeUnavailable     Code = 11
	CodeUnknownOutcome  Code = 12
	CodeUnknownMember   Code = 13
	CodeNotFound        Code = 20
	CodeCompacted       Code = 21
	CodeFutureRev       Code = 22
	CodeEmptyKey        Code = 23
	CodeKeyTooLarge     Code = 24
	CodeValueTooLarge   Code = 25
	CodeTooManyOps      Code = 26
	CodeCanceled        Code = 27
	CodeDeadline        Code = 28
	CodeInvalidRange    Code = 29
)

// codeTable is the one table mapping codes to sentinels, in match order.
var codeTable = []struct {
	code Code
	err  error
}{
	{CodeMalformed, ErrMalformed},
	{CodeVersion, ErrVersion},
	{CodeRequestTooLarge, ErrRequestTooLarge},
	{CodeBadNamespace, ErrBadNamespace},
	{CodeInvalid, ErrInvalid},
	{CodeWrongCluster, ErrWrongCluster},
	{CodeNotLeader, ErrNotLeader},
	{CodeNoLeader, ErrNoLeader},
	{CodeShuttingDown, ErrShuttingDown},
	{CodeUnavailable, ErrUnavailable},
	{CodeUnknownOutcome, ErrUnknownOutcome},
	{CodeUnknownMember, ErrUnknownMember},
	{CodeNotFound, storage.ErrNotFound},
	{CodeCompacted, storage.ErrCompacted},
	{CodeFutureRev, storage.ErrFutureRev},
	{CodeEmptyKey, storage.ErrEmptyKey},
	{CodeKeyTooLarge, storage.ErrKeyTooLarge},
	{CodeValueTooLarge, storage.ErrValueTooLarge},
	{CodeTooManyOps, storage.ErrTooManyOps},
	{CodeInvalidRange, storage.ErrInvalidRange},
	{CodeCanceled, context.Canceled},
	{CodeDeadline, context.DeadlineExceeded},
	{CodeInternal, ErrInternal},
}

// CodeOf returns the code for err: the first sentinel in the table that err
// wraps, else CodeInternal. A *Error keeps its code.
func CodeOf(err error) Code {
	var we *Error
	if errors.As(err, &we) {
		return we.Code
	}
	for _, e := range codeTable {
		if errors.Is(err, e.err) {
			return e.code
		}
	}
	return CodeInternal
}

// Sentinel returns the sentinel error for code (ErrInternal if unknown).
func Sentinel(code Code) error {
	for _, e := range codeTable {
		if e.code == code {
			return e.err
		}
	}
	return ErrInternal
}

// NotApplied reports whether an error with this code guarantees that a write
// was not applied, so retrying it elsewhere is safe.
func NotApplied(code Code) bool {
	switch code {
	case CodeNotLeader, CodeNoLeader, CodeShuttingDown, CodeMalformed, CodeVersion,
		CodeRequestTooLarge, CodeInvalid, CodeBadNamespace, CodeWrongCluster,
		CodeEmptyKey, CodeKeyTooLarge, CodeValueTooLarge, CodeTooManyOps, CodeInvalidRange:
		return true
	}
	return false
}

// Retryable reports whether a request that failed with code may succeed on
// another member or later (the cluster is electing, or this member is not the
// right one).
func Retryable(code Code) bool {
	switch code {
	case CodeNotLeader, CodeNoLeader, CodeShuttingDown, CodeUnavailable:
		return true
	}
	return false
}

// RetryableRead is Retryable for requests that change nothing (reads,
// watches). For them an unknown outcome (a member's request to the leader
// that broke on the way, as when the leader dies) is just a failed attempt.
func RetryableRead(code Code) bool {
	return Retryable(code) || code == CodeUnknownOutcome
}

// Error is an error as carried on the wire. It unwraps to its code's sentinel,
// so errors.Is(err, storage.ErrCompacted) works across the network.
type Error struct {
	Code    Code
	Message string
	// Leader is the API address of the leader when the member knows it
	// (set with CodeNotLeader).
	Leader string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return Sentinel(e.Code).Error()
	}
	return e.Message
}

// Unwrap returns the code's sentinel.
func (e *Error) Unwrap() error { return Sentinel(e.Code) }

// ToError converts err to a wire error, keeping a *Error as is. The message
// is err's text, which already names the sentinel.
func ToError(err error) *Error {
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	return &Error{Code: CodeOf(err), Message: err.Error()}
}

// Errorf builds a wire error of code with a formatted message that includes
// the sentinel's text.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf("%s: %s", Sentinel(code), fmt.Sprintf(format, args...))}
}
