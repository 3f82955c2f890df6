// Package rlm is a thin client of the RLM Runtime's gRPC API
// (rlm.v1.RLMService), on top of the generated stubs in
// github.com/rlm-runtime/rlm/clients/go/rlmpb/rlm/v1.
//
//	c, err := rlm.Dial(ctx, "127.0.0.1:50051", rlm.WithAPIKey(key), rlm.WithTimeout(10*time.Minute))
//	...
//	defer c.Close()
//	res, err := c.Complete(ctx, rlm.Request{Prompt: "How many lines mention ERROR?", Contexts: []rlm.Context{rlm.Text(logs)}})
//	fmt.Println(res.GetAnswer(), rlm.ReasonName(res.GetTerminationReason()))
//
// Limits that end a completion (iterations, tokens, cost, time, sub-calls)
// are not errors: the result comes back with Partial set and a
// TerminationReason. Set Request.FailOnPartial to get an *IncompleteError
// (errors.Is(err, rlm.ErrBudgetExceeded), ...) in that case. RPC errors are
// *Error values matching the sentinels of errors.go.
//
// Queued completions (jobs.go) return at once and run in the background:
//
//	sub, err := c.Submit(ctx, rlm.Request{Prompt: "...", IdempotencyKey: "job-42"})
//	...
//	res, err := c.Wait(ctx, sub.CompletionID) // or Watch, GetCompletion, Cancel
package rlm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	rlmv1 "github.com/rlm-runtime/rlm/clients/go/rlmpb/rlm/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	// ChunkSize is the size of one UploadContext message (the server
	// recommends 1 MiB or less).
	ChunkSize = 1 << 20
	// MaxInlineBytes: contexts larger than this are uploaded and passed by id.
	MaxInlineBytes = 1 << 20
	// MaxInlineTotalBytes caps the inline contexts of one request (the
	// server's request limit is 16 MiB); the largest are uploaded instead.
	MaxInlineTotalBytes = 8 << 20
)

type options struct {
	apiKey         string
	timeout        time.Duration
	creds          credentials.TransportCredentials
	dialOptions    []grpc.DialOption
	chunkSize      int
	maxInlineBytes int
	metadata       []string
}

// Option configures a Client.
type Option func(*options)

// WithAPIKey sends `authorization: Bearer <key>` metadata on every call.
func WithAPIKey(key string) Option { return func(o *options) { o.apiKey = key } }

// WithTimeout sets the deadline of calls whose context has none. For
// Complete and StreamComplete the deadline also bounds the completion: when
// it expires the server cancels it and the call fails with ErrDeadlineExceeded.
// For Submit it bounds the uploads and the submission, and for Watch and Wait
// the watching only: a queued completion goes on (bound it with
// Request.Limits.Timeout).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithTransportCredentials dials with TLS (or other) credentials; default plaintext.
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = c }
}

// WithDialOptions adds grpc.DialOption values (interceptors, keepalive, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithMetadata adds key/value pairs of metadata to every call.
func WithMetadata(kv ...string) Option {
	return func(o *options) { o.metadata = append(o.metadata, kv...) }
}

// WithChunkSize sets the bytes per UploadContext message (default ChunkSize).
func WithChunkSize(n int) Option { return func(o *options) { o.chunkSize = n } }

// WithMaxInlineBytes sets the size above which a context is uploaded and
// passed by id (default MaxInlineBytes).
func WithMaxInlineBytes(n int) Option { return func(o *options) { o.maxInlineBytes = n } }

// Client calls an RLM Runtime orchestrator. Safe for concurrent use.
type Client struct {
	conn   *grpc.ClientConn
	owns   bool
	rpc    rlmv1.RLMServiceClient
	health healthpb.HealthClient
	opts   options
}

func buildOptions(opts []Option) options {
	o := options{chunkSize: ChunkSize, maxInlineBytes: MaxInlineBytes}
	for _, opt := range opts {
		opt(&o)
	}
	if o.chunkSize <= 0 {
		o.chunkSize = ChunkSize
	}
	return o
}

// Dial connects to target (`host:port`, `tcp://host:port` or `unix:///path`).
// It does not wait for the connection: the first call reports ErrUnavailable
// if the server cannot be reached.
func Dial(ctx context.Context, target string, opts ...Option) (*Client, error) {
	o := buildOptions(opts)
	dial := []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(16<<20)),
	}
	if o.creds != nil {
		dial = append(dial, grpc.WithTransportCredentials(o.creds))
	} else {
		dial = append(dial, grpc.WithInsecure())
	}
	dial = append(dial, o.dialOptions...)
	conn, err := grpc.DialContext(ctx, normaliseTarget(target), dial...)
	if err != nil {
		return nil, mapError(err)
	}
	c := NewFromConn(conn, opts...)
	c.owns = true
	return c, nil
}

// NewFromConn wraps an existing connection (Close then leaves it open).
func NewFromConn(conn *grpc.ClientConn, opts ...Option) *Client {
	return &Client{
		conn:   conn,
		rpc:    rlmv1.NewRLMServiceClient(conn),
		health: healthpb.NewHealthClient(conn),
		opts:   buildOptions(opts),
	}
}

func normaliseTarget(target string) string {
	for _, prefix := range []string{"tcp://", "http://", "grpc://"} {
		if strings.HasPrefix(target, prefix) {
			return strings.TrimSuffix(strings.TrimPrefix(target, prefix), "/")
		}
	}
	return target
}

// Close closes the connection if Dial opened it.
func (c *Client) Close() error {
	if c.owns {
		return c.conn.Close()
	}
	return nil
}

// RPC is the generated stub, for calls this layer does not wrap. Its calls
// carry neither the WithAPIKey / WithMetadata metadata nor the WithTimeout
// deadline: add them to the context yourself.
func (c *Client) RPC() rlmv1.RLMServiceClient { return c.rpc }

// Conn is the underlying connection.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// callContext adds the metadata and, when ctx has no deadline, the default
// timeout. Each exported method applies it once, at its entry: the helpers it
// calls (spec, uploadBytes, uploadFile, upload) take the returned context as
// it is, so every RPC carries each metadata pair exactly once.
func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	var pairs []string
	if c.opts.apiKey != "" {
		pairs = append(pairs, "authorization", "Bearer "+c.opts.apiKey)
	}
	pairs = append(pairs, c.opts.metadata...)
	if len(pairs) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, pairs...)
	}
	if _, has := ctx.Deadline(); !has && c.opts.timeout > 0 {
		return context.WithTimeout(ctx, c.opts.timeout)
	}
	return context.WithCancel(ctx)
}

// ---------------------------------------------------------------------------
// Contexts

// Context is one context of a request; build it with Text, JSON, Bytes, File or ContextID.
type Context struct {
	text   *string
	data   []byte
	path   string
	id     string
	format rlmv1.ContextFormat
}

// Text is a context bound to a Python str.
func Text(s string) Context {
	return Context{text: &s, format: rlmv1.ContextFormat_CONTEXT_FORMAT_TEXT}
}

// JSON is a context bound to the value json.loads gives for v marshalled to JSON.
func JSON(v interface{}) (Context, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Context{}, err
	}
	s := string(b)
	return Context{text: &s, format: rlmv1.ContextFormat_CONTEXT_FORMAT_JSON}, nil
}

// Bytes is a context given as raw bytes (decoded as UTF-8 by the server).
func Bytes(b []byte, format rlmv1.ContextFormat) Context {
	return Context{data: b, format: format}
}

// File is a context read from a file: always uploaded in chunks, never read whole.
func File(path string, format rlmv1.ContextFormat) Context {
	return Context{path: path, format: format}
}

// ContextID is content uploaded before (Uploaded.ContextID).
func ContextID(id string, format rlmv1.ContextFormat) Context {
	return Context{id: id, format: format}
}

// Request is everything that defines a completion.
type Request struct {
	Prompt   string
	Contexts []Context
	// Model: `provider/model` or `scripted:<path>`; empty = server default.
	Model    string
	SubModel string
	// Limits of the whole tree (nil = server defaults).
	Limits *rlmv1.CompletionLimits
	// Sandbox limits of each session (nil = server defaults).
	Sandbox *rlmv1.SandboxLimits
	// Labels recorded in the trajectory.
	Metadata map[string]string
	// FailOnPartial: return an *IncompleteError (with the partial result)
	// when the completion ends without FINAL. Complete and StreamComplete
	// only; Submit ignores it (pass FailOnPartial() to Watch or Wait).
	FailOnPartial bool
	// IdempotencyKey is used by Submit only (Complete and StreamComplete
	// ignore it): a second Submit with the same key (and API key) returns
	// the first one's completion id, with Submission.Duplicate set, instead
	// of queueing again. Empty = no key. At most 128 bytes.
	IdempotencyKey string
}

type pending struct {
	index int
	data  []byte
	path  string
}

// spec builds the request's spec, uploading the contexts that are not sent
// inline; ctx comes from callContext.
func (c *Client) spec(ctx context.Context, req Request) (*rlmv1.CompletionSpec, error) {
	inputs := make([]*rlmv1.ContextInput, len(req.Contexts))
	var uploads []pending
	inlineSize := map[int]int{}
	inlineData := map[int][]byte{}
	total := 0
	for i, ctxItem := range req.Contexts {
		switch {
		case ctxItem.id != "":
			inputs[i] = &rlmv1.ContextInput{Source: &rlmv1.ContextInput_ContextId{ContextId: ctxItem.id}, Format: ctxItem.format}
		case ctxItem.path != "":
			uploads = append(uploads, pending{index: i, path: ctxItem.path})
		default:
			data := ctxItem.data
			if ctxItem.text != nil {
				data = []byte(*ctxItem.text)
			}
			if len(data) <= c.opts.maxInlineBytes && utf8.Valid(data) {
				inputs[i] = &rlmv1.ContextInput{Source: &rlmv1.ContextInput_Text{Text: string(data)}, Format: ctxItem.format}
				inlineSize[i] = len(data)
				inlineData[i] = data
				total += len(data)
			} else {
				uploads = append(uploads, pending{index: i, data: data})
			}
		}
	}
	// Keep the request small: upload the largest inline contexts while over the cap.
	for total > MaxInlineTotalBytes {
		largest := -1
		for i, n := range inlineSize {
			if largest < 0 || n > inlineSize[largest] {
				largest = i
			}
		}
		uploads = append(uploads, pending{index: largest, data: inlineData[largest]})
		total -= inlineSize[largest]
		delete(inlineSize, largest)
		inputs[largest] = nil
	}
	for _, u := range uploads {
		var up *Uploaded
		var err error
		if u.path != "" {
			up, err = c.uploadFile(ctx, u.path)
		} else {
			up, err = c.uploadBytes(ctx, u.data)
		}
		if err != nil {
			return nil, err
		}
		inputs[u.index] = &rlmv1.ContextInput{Source: &rlmv1.ContextInput_ContextId{ContextId: up.ContextID}, Format: req.Contexts[u.index].format}
	}
	return &rlmv1.CompletionSpec{
		Prompt:    req.Prompt,
		Contexts:  inputs,
		RootModel: req.Model,
		SubModel:  req.SubModel,
		Limits:    req.Limits,
		Sandbox:   req.Sandbox,
		Metadata:  req.Metadata,
	}, nil
}

// ---------------------------------------------------------------------------
// Completions

// Complete runs a completion and returns its result.
func (c *Client) Complete(ctx context.Context, req Request) (*rlmv1.CompletionResult, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	spec, err := c.spec(ctx, req)
	if err != nil {
		return nil, err
	}
	resp, err := c.rpc.Complete(ctx, &rlmv1.CompleteRequest{Spec: spec})
	if err != nil {
		return nil, mapError(err)
	}
	result := resp.GetResult()
	if req.FailOnPartial {
		if err := CheckPartial(result); err != nil {
			return result, err
		}
	}
	return result, nil
}

// Stream is a running StreamComplete or Watch call.
//
// Recv returns the events in order; the last one carries the result. Then
// Recv returns one terminal error, and every later Recv returns it again:
//   - io.EOF: the completion ended and its result event was received
//     (Result() is set; for a Watch started at or past the result event,
//     the stream ends without it and Result() stays nil). With
//     Request.FailOnPartial (StreamComplete) or FailOnPartial() (Watch) and
//     a partial result, the Recv after the result event returns the
//     *IncompleteError once, and io.EOF follows.
//   - an *Error: the RPC failed (its deadline expired, its context was
//     cancelled, the server failed it, ...).
//   - an *Error with codes.Canceled (errors.Is(err, ErrCancelled)) saying the
//     stream was closed: Close was called before the stream ended.
//
// Close may be called from any goroutine, e.g. to unblock a Recv waiting in
// another one; Recv itself must not be called from two goroutines at once.
type Stream struct {
	recv          func() (*rlmv1.CompletionEvent, error) // the RPC's Recv, unwrapped to its event
	cancel        context.CancelFunc
	failOnPartial bool

	mu     sync.Mutex
	result *rlmv1.CompletionResult
	err    error // terminal error; nil while the stream runs
}

// errStreamClosed is what Recv returns after Close.
func errStreamClosed() error {
	st := status.New(codes.Canceled, "the stream was closed by Stream.Close")
	return &Error{Code: codes.Canceled, Message: st.Message(), kind: ErrCancelled, status: st}
}

// Recv returns the next event, or the stream's terminal error (see Stream).
func (s *Stream) Recv() (*rlmv1.CompletionEvent, error) {
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	event, err := s.recv() // not under s.mu: Close must not wait for it
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil { // Close was called meanwhile
		return nil, s.err
	}
	if err == nil {
		if r := event.GetResult(); r != nil {
			s.result = r
		}
		return event, nil
	}
	s.cancel()
	if err != io.EOF {
		s.err = mapError(err)
		return nil, s.err
	}
	s.err = io.EOF
	if s.failOnPartial && s.result != nil {
		if err := CheckPartial(s.result); err != nil {
			return nil, err // once: the next Recv returns io.EOF
		}
	}
	return nil, io.EOF
}

// Result is the completion's result once the result event was received (nil before).
func (s *Stream) Result() *rlmv1.CompletionResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.result
}

// Close cancels the call: for StreamComplete, that cancels the completion if
// still running; a watched queued completion goes on (see Client.Cancel). A Recv
// blocked in another goroutine returns; Recv then reports that the stream
// was closed, unless the stream had already ended (its terminal error stays).
// Safe to call more than once, from any goroutine.
func (s *Stream) Close() {
	s.mu.Lock()
	if s.err == nil {
		s.err = errStreamClosed()
	}
	s.mu.Unlock()
	s.cancel()
}

// StreamComplete runs a completion and streams its events; the last event
// carries the result. Call Close (or read to io.EOF) to release the call.
func (c *Client) StreamComplete(ctx context.Context, req Request) (*Stream, error) {
	ctx, cancel := c.callContext(ctx)
	spec, err := c.spec(ctx, req)
	if err != nil {
		cancel()
		return nil, err
	}
	stream, err := c.rpc.StreamComplete(ctx, &rlmv1.StreamCompleteRequest{Spec: spec})
	if err != nil {
		cancel()
		return nil, mapError(err)
	}
	recv := func() (*rlmv1.CompletionEvent, error) {
		msg, err := stream.Recv()
		return msg.GetEvent(), err
	}
	return &Stream{recv: recv, cancel: cancel, failOnPartial: req.FailOnPartial}, nil
}

// Cancel cancels a running completion (Complete, StreamComplete or queued),
// or a queued one before it starts (it then ends CANCELLED at once); true
// when it had not ended yet, false when it had (a no-op, not an error).
func (c *Client) Cancel(ctx context.Context, completionID, reason string) (bool, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.rpc.CancelCompletion(ctx, &rlmv1.CancelCompletionRequest{CompletionId: completionID, Reason: reason})
	if err != nil {
		return false, mapError(err)
	}
	return resp.GetWasRunning(), nil
}

// ---------------------------------------------------------------------------
// Uploads

// Uploaded is a stored context.
type Uploaded struct {
	ContextID string
	SizeBytes uint64
}

// Context is the uploaded content as a request context.
func (u *Uploaded) Context(format rlmv1.ContextFormat) Context { return ContextID(u.ContextID, format) }

// UploadBytes uploads data in chunks; the first message declares its size and SHA-256.
func (c *Client) UploadBytes(ctx context.Context, data []byte) (*Uploaded, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	return c.uploadBytes(ctx, data)
}

// UploadFile uploads a file in chunks (declaring its size), never reading it whole.
func (c *Client) UploadFile(ctx context.Context, path string) (*Uploaded, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	return c.uploadFile(ctx, path)
}

// UploadContext uploads everything r yields, in chunks; size and hash are not declared.
func (c *Client) UploadContext(ctx context.Context, r io.Reader) (*Uploaded, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	return c.upload(ctx, r, 0, "")
}

// uploadBytes is UploadBytes with a context from callContext.
func (c *Client) uploadBytes(ctx context.Context, data []byte) (*Uploaded, error) {
	sum := sha256.Sum256(data)
	return c.upload(ctx, bytesReader(data), uint64(len(data)), hex.EncodeToString(sum[:]))
}

// uploadFile is UploadFile with a context from callContext.
func (c *Client) uploadFile(ctx context.Context, path string) (*Uploaded, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return c.upload(ctx, f, uint64(info.Size()), "")
}

type sliceReader struct{ data []byte }

func bytesReader(b []byte) *sliceReader { return &sliceReader{data: b} }

func (s *sliceReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}

// upload runs one UploadContext call; ctx comes from callContext.
func (c *Client) upload(ctx context.Context, r io.Reader, size uint64, sha string) (*Uploaded, error) {
	ctx, cancel := context.WithCancel(ctx) // ends the call on an early return
	defer cancel()
	stream, err := c.rpc.UploadContext(ctx)
	if err != nil {
		return nil, mapError(err)
	}
	var h hash.Hash = sha256.New()
	var sent uint64
	buf := make([]byte, c.opts.chunkSize)
	first := true
	for {
		n, readErr := io.ReadFull(r, buf)
		if n > 0 || first {
			msg := &rlmv1.UploadContextRequest{Chunk: append([]byte(nil), buf[:n]...)}
			if first {
				msg.TotalSizeBytes = size
				msg.ExpectedSha256 = sha
				first = false
			}
			h.Write(buf[:n])
			sent += uint64(n)
			if err := stream.Send(msg); err != nil {
				if err == io.EOF {
					// The server answered early (e.g. it already holds this
					// content): its status or response comes from CloseAndRecv.
					break
				}
				return nil, mapError(err)
			}
		}
		if readErr == io.EOF || readErr == io.ErrUnexpectedEOF {
			break
		}
		if readErr != nil {
			return nil, readErr
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, mapError(err)
	}
	wantID, wantSize := "sha256:"+sha, size
	if sha == "" {
		wantID, wantSize = "sha256:"+hex.EncodeToString(h.Sum(nil)), sent
	}
	if resp.GetContextId() != wantID || resp.GetSizeBytes() != wantSize {
		return nil, fmt.Errorf("rlm: upload integrity check failed: the content is %d bytes with id %s, the server answered %d bytes as %q",
			wantSize, wantID, resp.GetSizeBytes(), resp.GetContextId())
	}
	return &Uploaded{ContextID: resp.GetContextId(), SizeBytes: resp.GetSizeBytes()}, nil
}

// ---------------------------------------------------------------------------
// Trajectories and health

// GetTrajectory returns one trajectory in full.
func (c *Client) GetTrajectory(ctx context.Context, id string) (*rlmv1.Trajectory, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.rpc.GetTrajectory(ctx, &rlmv1.GetTrajectoryRequest{TrajectoryId: id})
	if err != nil {
		return nil, mapError(err)
	}
	return resp.GetTrajectory(), nil
}

// ListTrajectories returns one page of summaries, most recent first.
func (c *Client) ListTrajectories(ctx context.Context, req *rlmv1.ListTrajectoriesRequest) (*rlmv1.ListTrajectoriesResponse, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	if req == nil {
		req = &rlmv1.ListTrajectoriesRequest{}
	}
	resp, err := c.rpc.ListTrajectories(ctx, req)
	return resp, mapError(err)
}

// Health runs the standard gRPC health check of service ("" = overall,
// or e.g. "rlm.v1.RLMService").
func (c *Client) Health(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, mapError(err)
	}
	return resp.GetStatus(), nil
}

// ReasonName is the readable name of a termination reason ("FINAL", "TOKEN_BUDGET", ...).
func ReasonName(r rlmv1.TerminationReason) string {
	return strings.TrimPrefix(r.String(), "TERMINATION_REASON_")
}
