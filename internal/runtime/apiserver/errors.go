package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/ultracloud/ultracloud/internal/runtime/logging"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
)

// Error is an API error: an HTTP status, a stable code and a message for
// people. Handlers return it; WriteError turns it into problem+json.
type Error struct {
	Status int
	Code   string
	Detail string
	Field  string
	Err    error // underlying cause, logged but never sent
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", e.Code, e.Field, e.Detail)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Detail)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error with a formatted detail.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Detail: fmt.Sprintf(format, args...)}
}

// FieldError reports a bad value in one input field (400 invalid_field).
func FieldError(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: api.CodeInvalidField, Field: field, Detail: fmt.Sprintf(format, args...)}
}

// storageErrors is the one table mapping storage sentinels to API errors.
var storageErrors = []struct {
	err    error
	status int
	code   string
	detail string
}{
	{storage.ErrNotFound, http.StatusNotFound, api.CodeNotFound, "not found"},
	{storage.ErrCompacted, http.StatusGone, api.CodeRevisionCompacted, "the requested revision has been compacted: list again and watch from the list's revision"},
	{storage.ErrFutureRev, http.StatusBadRequest, api.CodeBadRequest, "the requested revision is in the future"},
	{storage.ErrKeyTooLarge, http.StatusBadRequest, api.CodeBadRequest, "key too large"},
	{storage.ErrValueTooLarge, http.StatusRequestEntityTooLarge, api.CodeBodyTooLarge, "resource too large to store"},
	{storage.ErrClosed, http.StatusServiceUnavailable, api.CodeUnavailable, "the store is shutting down; retry shortly"},
	{context.Canceled, 499, api.CodeUnavailable, "request cancelled"},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, api.CodeUnavailable, "request timed out"},
}

// AsError converts any error into an *Error: an *Error passes through, storage
// sentinels map through the table, anything else is a 500 whose detail hides
// the cause.
func AsError(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	for _, m := range storageErrors {
		if errors.Is(err, m.err) {
			return &Error{Status: m.status, Code: m.code, Detail: m.detail, Err: err}
		}
	}
	return &Error{Status: http.StatusInternalServerError, Code: api.CodeInternal, Detail: "internal error; the server log has details under this request ID", Err: err}
}

// ToProblem renders err as a problem document for request r.
func ToProblem(r *http.Request, err error) *api.Problem {
	e := AsError(err)
	title := http.StatusText(e.Status)
	if title == "" {
		title = "Error"
	}
	return &api.Problem{
		Type:      "https://ultracloud.dev/problems/" + e.Code,
		Title:     title,
		Status:    e.Status,
		Detail:    e.Detail,
		Code:      e.Code,
		Field:     e.Field,
		Instance:  r.URL.Path,
		RequestID: logging.RequestID(r.Context()),
	}
}

// WriteError writes err as application/problem+json and logs server faults.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	p := ToProblem(r, err)
	if p.Status >= 500 && log != nil {
		log.ErrorContext(r.Context(), "request failed", "path", r.URL.Path, "method", r.Method, "err", err)
	}
	w.Header().Set("Content-Type", api.ProblemContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	writeJSONAs(w, status, "application/json", v)
}

// writeJSONAs writes v as JSON with the given status and media type.
func writeJSONAs(w http.ResponseWriter, status int, mediaType string, v any) {
	w.Header().Set("Content-Type", mediaType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
