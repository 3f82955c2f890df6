package rlm

// Tests without the real services: error mapping, and what the client puts on
// the wire, checked against an in-process fake RLMService over bufconn.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	rlmv1 "github.com/rlm-runtime/rlm/clients/go/rlmpb/rlm/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

func TestMapErrorKindsAndMessage(t *testing.T) {
	cases := map[codes.Code]error{
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
		codes.Internal:           ErrServer,
		codes.Unimplemented:      ErrServer,
	}
	for code, sentinel := range cases {
		err := mapError(status.Error(code, "spec.x: no"))
		if !errors.Is(err, sentinel) {
			t.Errorf("%v: %v is not %v", code, err, sentinel)
		}
		var rpcErr *Error
		if !errors.As(err, &rpcErr) || rpcErr.Message != "spec.x: no" || rpcErr.Code != code {
			t.Errorf("%v: unexpected %#v", code, err)
		}
		if status.Code(err) != code {
			t.Errorf("%v: status.Code sees %v", code, status.Code(err))
		}
	}
	if mapError(nil) != nil {
		t.Error("nil must stay nil")
	}
	plain := errors.New("plain")
	if mapError(plain) != plain {
		t.Error("a non-status error must pass through")
	}
}

func TestIncompleteErrorKinds(t *testing.T) {
	cases := map[rlmv1.TerminationReason]error{
		rlmv1.TerminationReason_TERMINATION_REASON_MAX_ITERATIONS: ErrBudgetExceeded,
		rlmv1.TerminationReason_TERMINATION_REASON_TOKEN_BUDGET:   ErrBudgetExceeded,
		rlmv1.TerminationReason_TERMINATION_REASON_COST_BUDGET:    ErrBudgetExceeded,
		rlmv1.TerminationReason_TERMINATION_REASON_TIMEOUT:        ErrBudgetExceeded,
		rlmv1.TerminationReason_TERMINATION_REASON_MAX_SUBCALLS:   ErrBudgetExceeded,
		rlmv1.TerminationReason_TERMINATION_REASON_CANCELLED:      ErrCompletionCancelled,
		rlmv1.TerminationReason_TERMINATION_REASON_MODEL_ERROR:    ErrCompletionFailed,
		rlmv1.TerminationReason_TERMINATION_REASON_SANDBOX_ERROR:  ErrCompletionFailed,
		rlmv1.TerminationReason_TERMINATION_REASON_ERROR:          ErrCompletionFailed,
	}
	for reason, sentinel := range cases {
		err := CheckPartial(&rlmv1.CompletionResult{TerminationReason: reason, Partial: true, Detail: "why"})
		if !errors.Is(err, sentinel) || !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "why") {
			t.Errorf("%v: %v", reason, err)
		}
	}
	if err := CheckPartial(&rlmv1.CompletionResult{TerminationReason: rlmv1.TerminationReason_TERMINATION_REASON_FINAL}); err != nil {
		t.Errorf("FINAL: %v", err)
	}
	if ReasonName(rlmv1.TerminationReason_TERMINATION_REASON_TOKEN_BUDGET) != "TOKEN_BUDGET" {
		t.Error("ReasonName")
	}
}

// fakeService records what arrives.
type fakeService struct {
	rlmv1.UnimplementedRLMServiceServer
	mu       sync.Mutex
	metadata []metadata.MD
	deadline []time.Duration
	chunks   []int
	first    *rlmv1.UploadContextRequest
	specs    []*rlmv1.CompletionSpec
	submits  []*rlmv1.SubmitCompletionRequest
	keys     map[string]string // idempotency key -> completion id
	from     []uint64          // WatchCompletion from_event_index
}

func (f *fakeService) record(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	f.metadata = append(f.metadata, md)
	d := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl)
	}
	f.deadline = append(f.deadline, d)
}

func (f *fakeService) Complete(ctx context.Context, req *rlmv1.CompleteRequest) (*rlmv1.CompleteResponse, error) {
	f.record(ctx)
	f.mu.Lock()
	f.specs = append(f.specs, req.GetSpec())
	f.mu.Unlock()
	if p := req.GetSpec().GetPrompt(); strings.HasPrefix(p, "abort:") {
		return nil, status.Error(codes.ResourceExhausted, strings.TrimPrefix(p, "abort:"))
	}
	if req.GetSpec().GetPrompt() == "partial" {
		return &rlmv1.CompleteResponse{Result: &rlmv1.CompletionResult{
			Answer: "part", Partial: true, TerminationReason: rlmv1.TerminationReason_TERMINATION_REASON_MAX_SUBCALLS}}, nil
	}
	return &rlmv1.CompleteResponse{Result: &rlmv1.CompletionResult{
		Answer: "fake", TerminationReason: rlmv1.TerminationReason_TERMINATION_REASON_FINAL}}, nil
}

func (f *fakeService) UploadContext(stream rlmv1.RLMService_UploadContextServer) error {
	f.record(stream.Context())
	h := sha256.New()
	var size uint64
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		if f.first == nil {
			f.first = msg
		}
		f.chunks = append(f.chunks, len(msg.GetChunk()))
		f.mu.Unlock()
		h.Write(msg.GetChunk())
		size += uint64(len(msg.GetChunk()))
	}
	return stream.SendAndClose(&rlmv1.UploadContextResponse{ContextId: "sha256:" + hex.EncodeToString(h.Sum(nil)), SizeBytes: size})
}

// StreamComplete streams by prompt: "block" sends one event then waits for
// the call to end; "fail" sends one event then fails with ABORTED; "partial"
// ends with a partial result; anything else ends with FINAL.
func (f *fakeService) StreamComplete(req *rlmv1.StreamCompleteRequest, stream rlmv1.RLMService_StreamCompleteServer) error {
	f.record(stream.Context())
	send := func(ev *rlmv1.CompletionEvent) error {
		return stream.Send(&rlmv1.StreamCompleteResponse{Event: ev})
	}
	started := &rlmv1.CompletionEvent{Sequence: 1, CompletionId: "c1",
		Event: &rlmv1.CompletionEvent_IterationStarted{IterationStarted: &rlmv1.IterationStartedEvent{Iteration: 1}}}
	if err := send(started); err != nil {
		return err
	}
	result := &rlmv1.CompletionResult{Answer: "fake", TerminationReason: rlmv1.TerminationReason_TERMINATION_REASON_FINAL}
	switch req.GetSpec().GetPrompt() {
	case "block":
		<-stream.Context().Done()
		return status.FromContextError(stream.Context().Err()).Err()
	case "fail":
		return status.Error(codes.Aborted, "the completion kept changing state; retry")
	case "partial":
		result = &rlmv1.CompletionResult{Answer: "part", Partial: true, TerminationReason: rlmv1.TerminationReason_TERMINATION_REASON_MAX_SUBCALLS}
	}
	return send(&rlmv1.CompletionEvent{Sequence: 2, CompletionId: "c1", Event: &rlmv1.CompletionEvent_Result{Result: result}})
}

func (f *fakeService) CancelCompletion(ctx context.Context, req *rlmv1.CancelCompletionRequest) (*rlmv1.CancelCompletionResponse, error) {
	f.record(ctx)
	return nil, status.Error(codes.Aborted, "the completion kept changing state; retry")
}

// SubmitCompletion answers "abort:<msg>" prompts with RESOURCE_EXHAUSTED (a
// full queue), otherwise queues job-<n>, or returns the id of an earlier
// submission with the same idempotency key.
func (f *fakeService) SubmitCompletion(ctx context.Context, req *rlmv1.SubmitCompletionRequest) (*rlmv1.SubmitCompletionResponse, error) {
	f.record(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.submits = append(f.submits, req)
	if p := req.GetSpec().GetPrompt(); strings.HasPrefix(p, "abort:") {
		return nil, status.Error(codes.ResourceExhausted, strings.TrimPrefix(p, "abort:"))
	}
	key := req.GetIdempotencyKey()
	if id, ok := f.keys[key]; ok && key != "" {
		return &rlmv1.SubmitCompletionResponse{CompletionId: id, Duplicate: true}, nil
	}
	id := fmt.Sprintf("job-%d", len(f.submits))
	if key != "" {
		if f.keys == nil {
			f.keys = map[string]string{}
		}
		f.keys[key] = id
	}
	return &rlmv1.SubmitCompletionResponse{CompletionId: id}, nil
}

// fakeJobs are the queued completions the fake knows, by id: their events
// (sequences 1, 2, ...). "c1" ends FINAL, "partial" with MAX_SUBCALLS,
// "noresult" ends without a result event, and "block" waits after its first
// event until the call ends.
func fakeJobs(id string) ([]*rlmv1.CompletionEvent, bool) {
	started := &rlmv1.CompletionEvent{Sequence: 1, CompletionId: id,
		Event: &rlmv1.CompletionEvent_IterationStarted{IterationStarted: &rlmv1.IterationStartedEvent{Iteration: 1}}}
	result := func(r *rlmv1.CompletionResult) *rlmv1.CompletionEvent {
		r.CompletionId = id
		return &rlmv1.CompletionEvent{Sequence: 2, CompletionId: id, Event: &rlmv1.CompletionEvent_Result{Result: r}}
	}
	switch id {
	case "c1":
		return []*rlmv1.CompletionEvent{started, result(&rlmv1.CompletionResult{
			Answer: "fake", TerminationReason: rlmv1.TerminationReason_TERMINATION_REASON_FINAL})}, true
	case "partial":
		return []*rlmv1.CompletionEvent{started, result(&rlmv1.CompletionResult{
			Answer: "part", Partial: true, TerminationReason: rlmv1.TerminationReason_TERMINATION_REASON_MAX_SUBCALLS})}, true
	case "noresult", "block":
		return []*rlmv1.CompletionEvent{started}, true
	}
	return nil, false
}

func (f *fakeService) GetCompletion(ctx context.Context, req *rlmv1.GetCompletionRequest) (*rlmv1.GetCompletionResponse, error) {
	f.record(ctx)
	events, ok := fakeJobs(req.GetCompletionId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "completion_id: no completion %q", req.GetCompletionId())
	}
	resp := &rlmv1.GetCompletionResponse{CompletionId: req.GetCompletionId(), EventCount: uint64(len(events)),
		State: rlmv1.CompletionState_COMPLETION_STATE_RUNNING, Attempts: 1}
	if r := events[len(events)-1].GetResult(); r != nil {
		resp.State, resp.Result = rlmv1.CompletionState_COMPLETION_STATE_FINISHED, r
	}
	return resp, nil
}

func (f *fakeService) WatchCompletion(req *rlmv1.WatchCompletionRequest, stream rlmv1.RLMService_WatchCompletionServer) error {
	f.record(stream.Context())
	f.mu.Lock()
	f.from = append(f.from, req.GetFromEventIndex())
	f.mu.Unlock()
	events, ok := fakeJobs(req.GetCompletionId())
	if !ok {
		return status.Errorf(codes.NotFound, "completion_id: no completion %q", req.GetCompletionId())
	}
	for _, ev := range events {
		if ev.GetSequence() <= req.GetFromEventIndex() {
			continue
		}
		if err := stream.Send(&rlmv1.WatchCompletionResponse{Event: ev}); err != nil {
			return err
		}
	}
	if req.GetCompletionId() == "block" {
		<-stream.Context().Done()
		return status.FromContextError(stream.Context().Err()).Err()
	}
	return nil
}

func startFake(t *testing.T, opts ...Option) (*fakeService, *Client) {
	t.Helper()
	listener := bufconn.Listen(1 << 20)
	server := grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20))
	fake := &fakeService{}
	rlmv1.RegisterRLMServiceServer(server, fake)
	go server.Serve(listener) //nolint:errcheck
	t.Cleanup(server.Stop)
	dialer := grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return listener.Dial() })
	client, err := Dial(context.Background(), "bufnet", append(opts, WithDialOptions(dialer))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return fake, client
}

func TestAPIKeyMetadataAndDefaultTimeout(t *testing.T) {
	fake, client := startFake(t, WithAPIKey("s3cret"), WithTimeout(42*time.Second), WithMetadata("x-team", "search"))
	ctx := context.Background()
	if _, err := client.Complete(ctx, Request{Prompt: "hi"}); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := client.Complete(short, Request{Prompt: "hi"}); err != nil {
		t.Fatal(err)
	}
	for i, md := range fake.metadata {
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer s3cret" {
			t.Errorf("call %d authorization %v", i, got)
		}
		if got := md.Get("x-team"); len(got) != 1 || got[0] != "search" {
			t.Errorf("call %d x-team %v", i, got)
		}
	}
	if d := fake.deadline[0]; d < 35*time.Second || d > 43*time.Second {
		t.Errorf("default timeout: deadline in %v", d)
	}
	if d := fake.deadline[1]; d <= 0 || d > 6*time.Second {
		t.Errorf("context deadline wins: deadline in %v", d)
	}
}

func TestLargeInlineContextIsUploadedInChunks(t *testing.T) {
	fake, client := startFake(t)
	big := strings.Repeat("z", 3<<20+5)
	if _, err := client.Complete(context.Background(), Request{Prompt: "hi", Contexts: []Context{Text("small"), Text(big)}}); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range fake.chunks {
		if n > ChunkSize {
			t.Errorf("chunk of %d bytes", n)
		}
		total += n
	}
	if total != len(big) || len(fake.chunks) != 4 {
		t.Errorf("chunks %v", fake.chunks)
	}
	sum := sha256.Sum256([]byte(big))
	if fake.first.GetExpectedSha256() != hex.EncodeToString(sum[:]) || fake.first.GetTotalSizeBytes() != uint64(len(big)) {
		t.Errorf("first message declares %q / %d", fake.first.GetExpectedSha256(), fake.first.GetTotalSizeBytes())
	}
	spec := fake.specs[0]
	if spec.GetContexts()[0].GetText() != "small" || spec.GetContexts()[1].GetContextId() != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("contexts %v", spec.GetContexts())
	}
}

func TestUploadFromReaderAndEmpty(t *testing.T) {
	fake, client := startFake(t, WithChunkSize(4))
	up, err := client.UploadContext(context.Background(), strings.NewReader("0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	if up.SizeBytes != 10 || len(fake.chunks) != 3 {
		t.Errorf("%+v %v", up, fake.chunks)
	}
	empty, err := client.UploadBytes(context.Background(), nil)
	if err != nil || empty.SizeBytes != 0 {
		t.Fatalf("%v %v", empty, err)
	}
}

func TestStatusAndPartialOnTheWire(t *testing.T) {
	_, client := startFake(t)
	_, err := client.Complete(context.Background(), Request{Prompt: "abort:server at capacity"})
	if !errors.Is(err, ErrResourceExhausted) || !strings.Contains(err.Error(), "server at capacity") {
		t.Errorf("got %v", err)
	}
	res, err := client.Complete(context.Background(), Request{Prompt: "partial"})
	if err != nil || !res.GetPartial() {
		t.Errorf("a partial result is not an error by default: %v %v", res, err)
	}
	res, err = client.Complete(context.Background(), Request{Prompt: "partial", FailOnPartial: true})
	if !errors.Is(err, ErrBudgetExceeded) || res.GetAnswer() != "part" {
		t.Errorf("FailOnPartial: %v %v", res, err)
	}
}

func TestCancelAbortedIsErrAborted(t *testing.T) {
	_, client := startFake(t)
	_, err := client.Cancel(context.Background(), "c1", "test")
	if !errors.Is(err, ErrAborted) || errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "retry") || status.Code(err) != codes.Aborted {
		t.Errorf("got %v", err)
	}
}

func TestUploadsInsideCompleteCarryMetadataOnce(t *testing.T) {
	fake, client := startFake(t, WithAPIKey("s3cret"), WithMetadata("x-team", "search"), WithMaxInlineBytes(4))
	req := Request{Prompt: "hi", Contexts: []Context{Text("uploaded: above the inline limit")}}
	if _, err := client.Complete(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	stream, err := client.StreamComplete(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if _, err := recvAll(t, stream); err != io.EOF {
		t.Fatal(err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.metadata) != 4 || len(fake.chunks) != 2 {
		t.Fatalf("%d calls, chunks %v (want 2 uploads, Complete, StreamComplete)", len(fake.metadata), fake.chunks)
	}
	for i, md := range fake.metadata {
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer s3cret" {
			t.Errorf("call %d authorization %v", i, got)
		}
		if got := md.Get("x-team"); len(got) != 1 || got[0] != "search" {
			t.Errorf("call %d x-team %v", i, got)
		}
	}
}

// recvAll reads a stream to its first error.
func recvAll(t *testing.T, s *Stream) ([]*rlmv1.CompletionEvent, error) {
	t.Helper()
	var events []*rlmv1.CompletionEvent
	for {
		ev, err := s.Recv()
		if err != nil {
			return events, err
		}
		events = append(events, ev)
	}
}

func TestStreamEndsWithEOFAndCloseAfterwardsKeepsIt(t *testing.T) {
	_, client := startFake(t)
	stream, err := client.StreamComplete(context.Background(), Request{Prompt: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	events, err := recvAll(t, stream)
	if err != io.EOF || len(events) != 2 || stream.Result().GetAnswer() != "fake" {
		t.Fatalf("%d events, %v, result %v", len(events), err, stream.Result())
	}
	stream.Close()
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("Recv after the end and Close: %v", err)
	}
}

func TestStreamCloseFromAnotherGoroutine(t *testing.T) {
	_, client := startFake(t)
	stream, err := client.StreamComplete(context.Background(), Request{Prompt: "block"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		time.Sleep(50 * time.Millisecond)
		stream.Close()
	}()
	_, err = stream.Recv() // blocks until Close
	<-closed
	var rpcErr *Error
	if !errors.Is(err, ErrCancelled) || !errors.As(err, &rpcErr) || status.Code(err) != codes.Canceled || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Recv unblocked by Close: %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, again := stream.Recv(); again != err {
			t.Errorf("Recv after Close: %v, want %v", again, err)
		}
	}
	if stream.Result() != nil {
		t.Errorf("result %v", stream.Result())
	}
}

func TestStreamCloseBeforeRecv(t *testing.T) {
	_, client := startFake(t)
	stream, err := client.StreamComplete(context.Background(), Request{Prompt: "block"})
	if err != nil {
		t.Fatal(err)
	}
	stream.Close()
	if _, err := stream.Recv(); !errors.Is(err, ErrCancelled) || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Recv after Close: %v", err)
	}
}

func TestStreamRPCErrorIsSticky(t *testing.T) {
	_, client := startFake(t)
	stream, err := client.StreamComplete(context.Background(), Request{Prompt: "fail"})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	events, err := recvAll(t, stream)
	if len(events) != 1 || !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "retry") {
		t.Fatalf("%d events, %v", len(events), err)
	}
	for i := 0; i < 2; i++ {
		if _, again := stream.Recv(); again != err {
			t.Errorf("Recv after an RPC error: %v, want %v", again, err)
		}
	}
}

func TestStreamFailOnPartialThenEOF(t *testing.T) {
	_, client := startFake(t)
	stream, err := client.StreamComplete(context.Background(), Request{Prompt: "partial", FailOnPartial: true})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	events, err := recvAll(t, stream)
	var incomplete *IncompleteError
	if len(events) != 2 || events[1].GetResult() == nil || !errors.Is(err, ErrBudgetExceeded) || !errors.As(err, &incomplete) {
		t.Fatalf("%d events, %v", len(events), err)
	}
	if incomplete.Result.GetAnswer() != "part" || stream.Result().GetAnswer() != "part" {
		t.Errorf("partial result %v / %v", incomplete.Result, stream.Result())
	}
	for i := 0; i < 2; i++ {
		if _, again := stream.Recv(); again != io.EOF {
			t.Errorf("Recv after the IncompleteError: %v, want io.EOF", again)
		}
	}
}

// ---------------------------------------------------------------------------
// Queued completions

func TestQueuedCallsCarryMetadataOnceAndDeadline(t *testing.T) {
	fake, client := startFake(t, WithAPIKey("s3cret"), WithTimeout(42*time.Second), WithMetadata("x-team", "search"), WithMaxInlineBytes(4))
	ctx := context.Background()
	sub, err := client.Submit(ctx, Request{Prompt: "hi", Contexts: []Context{Text("uploaded: above the inline limit")}})
	if err != nil || sub.CompletionID == "" || sub.Duplicate {
		t.Fatalf("submit %+v %v", sub, err)
	}
	if _, err := client.GetCompletion(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	stream, err := client.Watch(ctx, "c1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := recvAll(t, stream); err != io.EOF {
		t.Fatal(err)
	}
	if _, err := client.Wait(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.metadata) != 5 || len(fake.chunks) != 1 {
		t.Fatalf("%d calls, chunks %v (want upload, Submit, Get, Watch, Wait)", len(fake.metadata), fake.chunks)
	}
	for i, md := range fake.metadata {
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer s3cret" {
			t.Errorf("call %d authorization %v", i, got)
		}
		if got := md.Get("x-team"); len(got) != 1 || got[0] != "search" {
			t.Errorf("call %d x-team %v", i, got)
		}
		if d := fake.deadline[i]; d < 35*time.Second || d > 43*time.Second {
			t.Errorf("call %d: deadline in %v", i, d)
		}
	}
	if id := fake.submits[0].GetSpec().GetContexts()[0].GetContextId(); !strings.HasPrefix(id, "sha256:") {
		t.Errorf("the large context was not passed by id: %v", fake.submits[0].GetSpec().GetContexts())
	}
}

func TestSubmitSendsIdempotencyKeyAndLimits(t *testing.T) {
	fake, client := startFake(t)
	ctx := context.Background()
	req := Request{Prompt: "queued", Model: "scripted:x", IdempotencyKey: "job-key-1", FailOnPartial: true,
		Limits: &rlmv1.CompletionLimits{MaxIterations: 7, TokenBudget: 1000}, Metadata: map[string]string{"team": "search"}}
	first, err := client.Submit(ctx, req)
	if err != nil || first.Duplicate {
		t.Fatalf("%+v %v", first, err)
	}
	again, err := client.Submit(ctx, req)
	if err != nil || !again.Duplicate || again.CompletionID != first.CompletionID {
		t.Errorf("same key: %+v %v, first %+v", again, err, first)
	}
	req.IdempotencyKey = ""
	other, err := client.Submit(ctx, req)
	if err != nil || other.Duplicate || other.CompletionID == first.CompletionID {
		t.Errorf("no key: %+v %v", other, err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	got := fake.submits[0]
	spec := got.GetSpec()
	if got.GetIdempotencyKey() != "job-key-1" || fake.submits[2].GetIdempotencyKey() != "" {
		t.Errorf("keys %q, %q", got.GetIdempotencyKey(), fake.submits[2].GetIdempotencyKey())
	}
	if spec.GetPrompt() != "queued" || spec.GetRootModel() != "scripted:x" || spec.GetLimits().GetMaxIterations() != 7 ||
		spec.GetLimits().GetTokenBudget() != 1000 || spec.GetMetadata()["team"] != "search" {
		t.Errorf("spec %v", spec)
	}
}

func TestWatchHonoursFromEventIndex(t *testing.T) {
	fake, client := startFake(t)
	ctx := context.Background()
	for _, tc := range []struct {
		from   uint64
		events int
		result bool
	}{{0, 2, true}, {1, 1, true}, {2, 0, false}} {
		stream, err := client.Watch(ctx, "c1", tc.from)
		if err != nil {
			t.Fatal(err)
		}
		events, err := recvAll(t, stream)
		if err != io.EOF || len(events) != tc.events || (stream.Result() != nil) != tc.result {
			t.Errorf("from %d: %d events, %v, result %v", tc.from, len(events), err, stream.Result())
		}
		if len(events) > 0 && events[0].GetSequence() != tc.from+1 {
			t.Errorf("from %d: first sequence %d", tc.from, events[0].GetSequence())
		}
		if tc.result && stream.Result().GetAnswer() != "fake" {
			t.Errorf("from %d: result %v", tc.from, stream.Result())
		}
		stream.Close()
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.from) != 3 || fake.from[0] != 0 || fake.from[1] != 1 || fake.from[2] != 2 {
		t.Errorf("from_event_index sent: %v", fake.from)
	}
}

func TestWaitReturnsTheResult(t *testing.T) {
	fake, client := startFake(t)
	ctx := context.Background()
	res, err := client.Wait(ctx, "c1")
	if err != nil || res.GetAnswer() != "fake" || res.GetCompletionId() != "c1" {
		t.Errorf("c1: %v %v", res, err)
	}
	res, err = client.Wait(ctx, "partial")
	if err != nil || !res.GetPartial() {
		t.Errorf("a partial result is not an error by default: %v %v", res, err)
	}
	res, err = client.Wait(ctx, "partial", FailOnPartial())
	var incomplete *IncompleteError
	if !errors.Is(err, ErrBudgetExceeded) || !errors.As(err, &incomplete) || res.GetAnswer() != "part" {
		t.Errorf("FailOnPartial: %v %v", res, err)
	}
	if res, err = client.Wait(ctx, "noresult"); err == nil || res != nil || !strings.Contains(err.Error(), "without a result") {
		t.Errorf("no result event: %v %v", res, err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err = client.Wait(short, "block"); !errors.Is(err, ErrDeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	for i, from := range fake.from {
		if from != 0 {
			t.Errorf("Wait %d watched from %d", i, from)
		}
	}
}

func TestGetCompletionAndErrorMapping(t *testing.T) {
	_, client := startFake(t)
	ctx := context.Background()
	st, err := client.GetCompletion(ctx, "c1")
	if err != nil || StateName(st.GetState()) != "FINISHED" || !Ended(st.GetState()) || st.GetEventCount() != 2 || st.GetResult().GetAnswer() != "fake" {
		t.Errorf("c1: %v %v", st, err)
	}
	st, err = client.GetCompletion(ctx, "block")
	if err != nil || StateName(st.GetState()) != "RUNNING" || Ended(st.GetState()) || st.GetResult() != nil {
		t.Errorf("block: %v %v", st, err)
	}
	var rpcErr *Error
	if _, err = client.GetCompletion(ctx, "nope"); !errors.Is(err, ErrNotFound) || !errors.As(err, &rpcErr) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("GetCompletion of an unknown id: %v", err)
	}
	stream, err := client.Watch(ctx, "nope", 0)
	if err != nil {
		t.Fatal(err) // a server-streaming call reports its status from Recv
	}
	if _, err = stream.Recv(); !errors.Is(err, ErrNotFound) || status.Code(err) != codes.NotFound {
		t.Errorf("Watch of an unknown id: %v", err)
	}
	if _, again := stream.Recv(); again != err {
		t.Errorf("sticky: %v, want %v", again, err)
	}
	if _, err = client.Wait(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Wait of an unknown id: %v", err)
	}
	if _, err = client.Submit(ctx, Request{Prompt: "abort:queue full; retry in 2s"}); !errors.Is(err, ErrResourceExhausted) || !strings.Contains(err.Error(), "retry in 2s") {
		t.Errorf("full queue: %v", err)
	}
}

func TestWatchCloseFromAnotherGoroutineAndFailOnPartial(t *testing.T) {
	_, client := startFake(t)
	stream, err := client.Watch(context.Background(), "block", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		stream.Close()
	}()
	_, err = stream.Recv() // blocks until Close
	if !errors.Is(err, ErrCancelled) || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Recv unblocked by Close: %v", err)
	}
	if _, again := stream.Recv(); again != err {
		t.Errorf("Recv after Close: %v, want %v", again, err)
	}

	stream, err = client.Watch(context.Background(), "partial", 0, FailOnPartial())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	events, err := recvAll(t, stream)
	if len(events) != 2 || !errors.Is(err, ErrBudgetExceeded) || stream.Result().GetAnswer() != "part" {
		t.Fatalf("%d events, %v", len(events), err)
	}
	if _, again := stream.Recv(); again != io.EOF {
		t.Errorf("Recv after the IncompleteError: %v, want io.EOF", again)
	}
}
