package rlm

// Queued completions (docs/queue.md): Submit returns at once with an id, the
// completion runs in the background, and GetCompletion, Watch, Wait and
// Cancel follow it by that id (the completion id of its events and result).

import (
	"context"
	"fmt"
	"io"
	"strings"

	rlmv1 "github.com/rlm-runtime/rlm/clients/go/rlmpb/rlm/v1"
)

// Submission is a queued completion.
type Submission struct {
	// CompletionID: for GetCompletion, Watch, Wait, Cancel and (once it ran)
	// GetTrajectory.
	CompletionID string
	// Duplicate: Request.IdempotencyKey matched an earlier submission, whose
	// id this is; nothing new was queued.
	Duplicate bool
}

// Submit queues a completion and returns its id at once (SubmitCompletion).
// The request is checked as by Complete (ErrInvalidRequest naming the
// field) and its contexts are uploaded the same way; Request.IdempotencyKey
// makes retries safe; Request.FailOnPartial is ignored. The deadline bounds
// the uploads and the submission, not the completion. A full queue is
// ErrResourceExhausted (its message says when to retry).
func (c *Client) Submit(ctx context.Context, req Request) (*Submission, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	spec, err := c.spec(ctx, req)
	if err != nil {
		return nil, err
	}
	resp, err := c.rpc.SubmitCompletion(ctx, &rlmv1.SubmitCompletionRequest{Spec: spec, IdempotencyKey: req.IdempotencyKey})
	if err != nil {
		return nil, mapError(err)
	}
	return &Submission{CompletionID: resp.GetCompletionId(), Duplicate: resp.GetDuplicate()}, nil
}

// GetCompletion returns the state of a queued completion: its place in the
// queue, the partial answer and usage while it runs, the result once it
// ended, and EventCount (Watch from there returns only what comes next).
// Unknown or expired ids: ErrNotFound.
func (c *Client) GetCompletion(ctx context.Context, completionID string) (*rlmv1.GetCompletionResponse, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.rpc.GetCompletion(ctx, &rlmv1.GetCompletionRequest{CompletionId: completionID})
	if err != nil {
		return nil, mapError(err)
	}
	return resp, nil
}

// WatchOption configures Watch and Wait.
type WatchOption func(*watchOptions)

type watchOptions struct {
	failOnPartial bool
}

// FailOnPartial makes Watch and Wait report a partial result as an
// *IncompleteError, as Request.FailOnPartial does for Complete and
// StreamComplete.
func FailOnPartial() WatchOption { return func(o *watchOptions) { o.failOnPartial = true } }

func buildWatchOptions(opts []WatchOption) watchOptions {
	var o watchOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Watch streams the events of a queued completion (WatchCompletion): the
// same events as StreamComplete, ending with the result, and the same
// *Stream (Recv until io.EOF, Result, Close). It waits while the completion
// is queued. fromEventIndex is the number of events already received (the
// Sequence of the last one; GetCompletion's EventCount): the stream starts
// after it, 0 = from the first event. Closing the stream, or its context
// ending, stops watching only: the completion goes on (see Cancel). An
// unknown id is an ErrNotFound from the first Recv; events older than the
// server keeps, ErrInvalidRequest (OUT_OF_RANGE).
func (c *Client) Watch(ctx context.Context, completionID string, fromEventIndex uint64, opts ...WatchOption) (*Stream, error) {
	o := buildWatchOptions(opts)
	ctx, cancel := c.callContext(ctx)
	return c.watch(ctx, cancel, completionID, fromEventIndex, o.failOnPartial)
}

// watch starts a WatchCompletion call; ctx comes from callContext, and the
// stream owns cancel (called here if the call cannot start).
func (c *Client) watch(ctx context.Context, cancel context.CancelFunc, completionID string, from uint64, failOnPartial bool) (*Stream, error) {
	stream, err := c.rpc.WatchCompletion(ctx, &rlmv1.WatchCompletionRequest{CompletionId: completionID, FromEventIndex: from})
	if err != nil {
		cancel()
		return nil, mapError(err)
	}
	recv := func() (*rlmv1.CompletionEvent, error) {
		msg, err := stream.Recv()
		return msg.GetEvent(), err
	}
	return &Stream{recv: recv, cancel: cancel, failOnPartial: failOnPartial}, nil
}

// Wait watches a queued completion until it ends and returns its result
// (with FailOnPartial(), a partial result comes with an *IncompleteError).
// The deadline bounds the waiting only: when it expires Wait returns
// ErrDeadlineExceeded and the completion goes on.
func (c *Client) Wait(ctx context.Context, completionID string, opts ...WatchOption) (*rlmv1.CompletionResult, error) {
	o := buildWatchOptions(opts)
	ctx, cancel := c.callContext(ctx)
	stream, err := c.watch(ctx, cancel, completionID, 0, false)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	for {
		event, err := stream.Recv()
		if err == io.EOF {
			return nil, fmt.Errorf("rlm: the event stream of %s ended without a result", completionID)
		}
		if err != nil {
			return nil, err
		}
		if result := event.GetResult(); result != nil {
			if o.failOnPartial {
				if err := CheckPartial(result); err != nil {
					return result, err
				}
			}
			return result, nil
		}
	}
}

// StateName is the readable name of a queued completion's state ("QUEUED",
// "RUNNING", "FINISHED", "CANCELLED", "FAILED").
func StateName(s rlmv1.CompletionState) string {
	return strings.TrimPrefix(s.String(), "COMPLETION_STATE_")
}

// Ended reports whether a queued completion in state s has ended (FINISHED,
// CANCELLED or FAILED): GetCompletionResponse.Result is then set.
func Ended(s rlmv1.CompletionState) bool {
	switch s {
	case rlmv1.CompletionState_COMPLETION_STATE_FINISHED,
		rlmv1.CompletionState_COMPLETION_STATE_CANCELLED,
		rlmv1.CompletionState_COMPLETION_STATE_FAILED:
		return true
	}
	return false
}
