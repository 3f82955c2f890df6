package rlm

import (
	"errors"
	"fmt"

	rlmv1 "github.com/rlm-runtime/rlm/clients/go/rlmpb/rlm/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors; test with errors.Is. RPC failures are *Error values that
// match one of the first group; partial results are *IncompleteError values
// (returned only with Request.FailOnPartial) that match the second group.
var (
	// INVALID_ARGUMENT / OUT_OF_RANGE: bad parameters (the message names the field).
	ErrInvalidRequest = errors.New("rlm: invalid request")
	// NOT_FOUND: unknown context id, trajectory id or completion id.
	ErrNotFound = errors.New("rlm: not found")
	// PERMISSION_DENIED: network access or a host path the server does not allow.
	ErrPermissionDenied = errors.New("rlm: permission denied")
	// UNAUTHENTICATED: missing or rejected API key.
	ErrUnauthenticated = errors.New("rlm: unauthenticated")
	// RESOURCE_EXHAUSTED: server at capacity, or an upload over its size limit.
	ErrResourceExhausted = errors.New("rlm: resource exhausted")
	// FAILED_PRECONDITION.
	ErrFailedPrecondition = errors.New("rlm: failed precondition")
	// UNAVAILABLE: the server (or its sandbox agent) cannot be reached.
	ErrUnavailable = errors.New("rlm: unavailable")
	// DEADLINE_EXCEEDED: the context's deadline (or WithTimeout) expired.
	ErrDeadlineExceeded = errors.New("rlm: deadline exceeded")
	// CANCELLED: the call's context was cancelled, or the Stream was closed.
	ErrCancelled = errors.New("rlm: cancelled")
	// ABORTED: a conflicting change on the server; the call may be retried.
	ErrAborted = errors.New("rlm: aborted")
	// Any other status (INTERNAL, UNKNOWN, UNIMPLEMENTED, ...).
	ErrServer = errors.New("rlm: server error")

	// Any partial result (termination reason other than FINAL).
	ErrIncomplete = errors.New("rlm: completion incomplete")
	// MAX_ITERATIONS, TOKEN_BUDGET, COST_BUDGET, TIMEOUT or MAX_SUBCALLS.
	ErrBudgetExceeded = errors.New("rlm: budget exceeded")
	// CANCELLED termination (CancelCompletion, or the RPC was cancelled).
	ErrCompletionCancelled = errors.New("rlm: completion cancelled")
	// MODEL_ERROR, SANDBOX_ERROR, ERROR (and reasons unknown to this version).
	ErrCompletionFailed = errors.New("rlm: completion failed")
)

// Error is an RPC failure: the gRPC status code and the server's message.
type Error struct {
	Code    codes.Code
	Message string
	kind    error
	status  *status.Status
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%s)", e.Message, codeName(e.Code)) }

// Is matches the sentinel of the error's kind (errors.Is(err, rlm.ErrNotFound)).
func (e *Error) Is(target error) bool { return target == e.kind }

// GRPCStatus lets status.FromError / status.Code see the original status.
func (e *Error) GRPCStatus() *status.Status { return e.status }

func codeName(c codes.Code) string {
	names := map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
		codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
		codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
		codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
		codes.Unauthenticated: "UNAUTHENTICATED",
	}
	if name, ok := names[c]; ok {
		return name
	}
	return c.String()
}

var kinds = map[codes.Code]error{
	codes.InvalidArgument:    ErrInvalidRequest,
	codes.OutOfRange:         ErrInvalidRequest,
	codes.NotFound:           ErrNotFound,
	codes.PermissionDenied:   ErrPermissionDenied,
	codes.Unauthenticated:    ErrUnauthenticated,
	codes.ResourceExhausted:  ErrResourceExhausted,
	codes.FailedPrecondition: ErrFailedPrecondition,
	codes.Unavailable:        ErrUnavailable,
	codes.DeadlineExceeded:   ErrDeadlineExceeded,
	codes.Canceled:           ErrCancelled,
	codes.Aborted:            ErrAborted,
}

// mapError converts a gRPC error into an *Error (nil stays nil; errors
// that carry no gRPC status are returned unchanged).
func mapError(err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	kind, ok := kinds[st.Code()]
	if !ok {
		kind = ErrServer
	}
	message := st.Message()
	if message == "" {
		message = "RPC failed with " + codeName(st.Code())
	}
	return &Error{Code: st.Code(), Message: message, kind: kind, status: st}
}

// IncompleteError reports a completion that ended without FINAL. It is not
// an RPC error: it is returned only when the request asked for it
// (Request.FailOnPartial), together with the partial Result.
type IncompleteError struct {
	Result *rlmv1.CompletionResult
}

func (e *IncompleteError) Error() string {
	text := fmt.Sprintf("completion %s ended with %s", e.Result.GetCompletionId(), ReasonName(e.Result.GetTerminationReason()))
	if d := e.Result.GetDetail(); d != "" {
		text += ": " + d
	}
	return text
}

// Is matches ErrIncomplete and the sentinel of the termination reason.
func (e *IncompleteError) Is(target error) bool {
	if target == ErrIncomplete {
		return true
	}
	switch e.Result.GetTerminationReason() {
	case rlmv1.TerminationReason_TERMINATION_REASON_MAX_ITERATIONS,
		rlmv1.TerminationReason_TERMINATION_REASON_TOKEN_BUDGET,
		rlmv1.TerminationReason_TERMINATION_REASON_COST_BUDGET,
		rlmv1.TerminationReason_TERMINATION_REASON_TIMEOUT,
		rlmv1.TerminationReason_TERMINATION_REASON_MAX_SUBCALLS:
		return target == ErrBudgetExceeded
	case rlmv1.TerminationReason_TERMINATION_REASON_CANCELLED:
		return target == ErrCompletionCancelled
	default:
		return target == ErrCompletionFailed
	}
}

// CheckPartial returns an *IncompleteError when result is partial, nil otherwise.
func CheckPartial(result *rlmv1.CompletionResult) error {
	if result.GetPartial() || result.GetTerminationReason() != rlmv1.TerminationReason_TERMINATION_REASON_FINAL {
		return &IncompleteError{Result: result}
	}
	return nil
}
