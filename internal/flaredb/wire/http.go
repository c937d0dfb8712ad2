package wire

import "net/http"

// HTTP mapping. Every call is a POST of an encoded request to one of these
// paths over HTTP/2 (h2c: prior knowledge, no TLS yet), answered with an
// encoded response or an Error body. Watch answers with a stream of frames
// (AppendFrame) until the watch ends; snapshot answers with the raw
// snapshot stream.
const (
	PathGet            = "/flaredb/v1/get"
	PathRange          = "/flaredb/v1/range"
	PathTxn            = "/flaredb/v1/txn"
	PathWatch          = "/flaredb/v1/watch"
	PathRevision       = "/flaredb/v1/revision"
	PathCompact        = "/flaredb/v1/compact"
	PathReadIndex      = "/flaredb/v1/readindex"
	PathStatus         = "/flaredb/v1/status"
	PathMemberAdd      = "/flaredb/v1/members/add"
	PathMemberRemove   = "/flaredb/v1/members/remove"
	PathTransferLeader = "/flaredb/v1/leader/transfer"
	PathSnapshot       = "/flaredb/v1/snapshot"

	// ContentType is the media type of request and response bodies.
	ContentType = "application/x-flaredb"
	// HeaderCluster carries the cluster ID on every request; a member of
	// another cluster refuses the request.
	HeaderCluster = "Flaredb-Cluster"
	// HeaderForwarded marks a request a member forwarded to the leader; the
	// leader does not forward it again.
	HeaderForwarded = "Flaredb-Forwarded"
	// HeaderLeader on a response names the leader's API address, so
	// clients can go there directly next time.
	HeaderLeader = "Flaredb-Leader"
)

// HTTPStatus is the HTTP status used for an error code.
func HTTPStatus(c Code) int {
	switch c {
	case CodeMalformed, CodeInvalid, CodeBadNamespace, CodeEmptyKey, CodeKeyTooLarge,
		CodeValueTooLarge, CodeTooManyOps, CodeVersion, CodeInvalidRange:
		return http.StatusBadRequest
	case CodeRequestTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeWrongCluster:
		return http.StatusForbidden
	case CodeNotLeader:
		return http.StatusMisdirectedRequest
	case CodeNoLeader, CodeShuttingDown, CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeNotFound, CodeUnknownMember:
		return http.StatusNotFound
	case CodeCompacted:
		return http.StatusGone
	case CodeFutureRev:
		return http.StatusUnprocessableEntity
	case CodeCanceled:
		return 499
	case CodeDeadline:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
