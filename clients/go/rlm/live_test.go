package rlm

// Tests against the real services. The test binary starts them itself (like
// tests/src/lib.rs Stack::start): rlm-sandbox-agent on a Unix socket in a
// temporary directory and rlm-orchestrator on free localhost ports, with the
// offline scripted model. Binaries: $RLM_BIN_DIR, default
// <repo>/target/debug (build them with `cargo build --workspace --bins`).
// The agent needs root; without it these tests fail saying so.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	rlmv1 "github.com/rlm-runtime/rlm/clients/go/rlmpb/rlm/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

type liveStack struct {
	dir       string
	grpcAddr  string
	agentSock string
	procs     []*exec.Cmd
	turnsN    int
	mu        sync.Mutex
}

var (
	stackOnce sync.Once
	stack     *liveStack
	stackErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if stack != nil {
		stack.stop()
	}
	os.Exit(code)
}

func binDir() (string, error) {
	if dir := os.Getenv("RLM_BIN_DIR"); dir != "" {
		return dir, nil
	}
	// The package directory may be reached through a GOPATH symlink: resolve
	// it before walking up to the repository root (clients/go/rlm -> ../../..).
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(wd); err == nil {
		wd = real
	}
	return filepath.Join(wd, "..", "..", "..", "target", "debug"), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startStack() (*liveStack, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the live tests start the real rlm-sandbox-agent, which isolates sessions with " +
			"namespaces and cgroups and therefore must run as root: run clients/test.sh as root (CI does)")
	}
	bins, err := binDir()
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"rlm-sandbox-agent", "rlm-orchestrator"} {
		if _, err := os.Stat(filepath.Join(bins, name)); err != nil {
			return nil, fmt.Errorf("%s is missing: build the binaries first (`cargo build --workspace --bins`), or set RLM_BIN_DIR",
				filepath.Join(bins, name))
		}
	}
	dir, err := ioutil.TempDir("", "rlm-go-client-tests-")
	if err != nil {
		return nil, err
	}
	grpcPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &liveStack{dir: dir, grpcAddr: "127.0.0.1:" + strconv.Itoa(grpcPort), agentSock: filepath.Join(dir, "run", "sandbox.sock")}
	defaultModel := s.turns("FINAL(default)")
	agentURL := "unix://" + s.agentSock
	if err := s.spawn(bins, "rlm-sandbox-agent", []string{
		"RLM_AGENT_LISTEN=" + agentURL,
		"RLM_AGENT_DATA_DIR=" + filepath.Join(dir, "agent"),
		"RLM_AGENT_CGROUP=rlm-goclient-" + strconv.Itoa(os.Getpid()),
		"RLM_AGENT_POOL_SIZE=1",
		"RLM_SHUTDOWN_ANNOUNCE=300ms",
	}); err != nil {
		return nil, err
	}
	if err := s.spawn(bins, "rlm-orchestrator", []string{
		"RLM_LISTEN=" + s.grpcAddr,
		"RLM_HTTP_LISTEN=127.0.0.1:" + strconv.Itoa(httpPort),
		"RLM_SANDBOX_ENDPOINT=" + agentURL,
		"RLM_LOG_DIR=" + filepath.Join(dir, "trajectories"),
		"RLM_SHUTDOWN_ANNOUNCE=300ms",
		"RLM_MODEL=" + defaultModel,
	}); err != nil {
		s.stop()
		return nil, err
	}
	// grpc-go 1.33 has no unix: resolver, so the agent is checked through a dialer.
	unixDialer := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", s.agentSock)
	})
	for _, target := range []struct {
		addr string
		opts []grpc.DialOption
	}{{"agent", []grpc.DialOption{unixDialer}}, {s.grpcAddr, nil}} {
		if err := waitServing(target.addr, target.opts); err != nil {
			logs := s.logs()
			s.stop()
			return nil, fmt.Errorf("%v\n%s", err, logs)
		}
	}
	return s, nil
}

func (s *liveStack) spawn(bins, name string, env []string) error {
	logFile, err := os.Create(filepath.Join(s.dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(bins, name))
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %v", name, err)
	}
	s.procs = append(s.procs, cmd)
	return nil
}

func waitServing(addr string, opts []grpc.DialOption) error {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := grpc.DialContext(ctx, addr, append([]grpc.DialOption{grpc.WithInsecure(), grpc.WithBlock()}, opts...)...)
		if err == nil {
			var resp *healthpb.HealthCheckResponse
			resp, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			conn.Close()
			if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				cancel()
				return nil
			}
		}
		cancel()
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s never became SERVING: %v", addr, last)
}

func (s *liveStack) logs() string {
	var b strings.Builder
	for _, name := range []string{"rlm-sandbox-agent", "rlm-orchestrator"} {
		data, _ := ioutil.ReadFile(filepath.Join(s.dir, name+".log"))
		if len(data) > 8000 {
			data = data[len(data)-8000:]
		}
		fmt.Fprintf(&b, "--- %s log ---\n%s\n", name, data)
	}
	return b.String()
}

func (s *liveStack) stop() {
	// Orchestrator first, then the agent (which destroys its sessions and cgroups).
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
	os.RemoveAll(s.dir)
}

// turns writes a scripted-model turns file and returns `scripted:<path>`.
func (s *liveStack) turns(turns ...string) string {
	s.mu.Lock()
	s.turnsN++
	n := s.turnsN
	s.mu.Unlock()
	path := filepath.Join(s.dir, "turns", fmt.Sprintf("turns-%d.txt", n))
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	if err := ioutil.WriteFile(path, []byte(strings.Join(turns, "\n---\n")+"\n"), 0o644); err != nil {
		panic(err)
	}
	return "scripted:" + path
}

func repl(code string) string { return "```repl\n" + code + "\n```" }

func live(t *testing.T) (*liveStack, *Client) {
	t.Helper()
	stackOnce.Do(func() { stack, stackErr = startStack() })
	if stackErr != nil {
		t.Fatal(stackErr)
	}
	client, err := Dial(context.Background(), stack.grpcAddr, WithTimeout(2*time.Minute), WithAPIKey("go-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return stack, client
}

func TestLiveHealth(t *testing.T) {
	_, client := live(t)
	for _, service := range []string{"", "rlm.v1.RLMService"} {
		st, err := client.Health(context.Background(), service)
		if err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v %v", service, st, err)
		}
	}
	if _, err := client.Health(context.Background(), "no.such.Service"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown service: %v", err)
	}
}

func TestLiveComplete(t *testing.T) {
	s, client := live(t)
	model := s.turns(repl("print(len(context))"), "FINAL(42)")
	res, err := client.Complete(context.Background(), Request{Prompt: "How long?", Contexts: []Context{Text("hello")}, Model: model})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetAnswer() != "42" || res.GetPartial() || ReasonName(res.GetTerminationReason()) != "FINAL" {
		t.Errorf("result %v", res)
	}
	if res.GetIterations() != 2 || res.GetTotalUsage().GetCalls() != 2 || res.GetCompletionId() == "" || res.GetTrajectoryId() == "" {
		t.Errorf("result %v", res)
	}
	tr, err := client.GetTrajectory(context.Background(), res.GetTrajectoryId())
	if err != nil || tr.GetResult().GetAnswer() != "42" {
		t.Errorf("trajectory %v %v", tr, err)
	}
	list, err := client.ListTrajectories(context.Background(), &rlmv1.ListTrajectoriesRequest{PageSize: 1})
	if err != nil || len(list.GetTrajectories()) != 1 {
		t.Errorf("list %v %v", list, err)
	}
}

func TestLiveStreamComplete(t *testing.T) {
	s, client := live(t)
	model := s.turns(repl("print(len(context))"), "FINAL(42)")
	stream, err := client.StreamComplete(context.Background(), Request{Prompt: "stream", Contexts: []Context{Text("hello")}, Model: model})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	events, err := recvAll(t, stream)
	if err != io.EOF {
		t.Fatal(err)
	}
	if len(events) < 3 {
		t.Fatalf("only %d events", len(events))
	}
	for i, ev := range events {
		if ev.GetSequence() != uint64(i+1) || ev.GetCompletionId() != events[0].GetCompletionId() {
			t.Errorf("event %d: sequence %d completion %q", i, ev.GetSequence(), ev.GetCompletionId())
		}
		if (ev.GetResult() != nil) != (i == len(events)-1) {
			t.Errorf("event %d: result only on the last event", i)
		}
	}
	if _, ok := events[0].GetEvent().(*rlmv1.CompletionEvent_IterationStarted); !ok {
		t.Errorf("first event %T", events[0].GetEvent())
	}
	var code *rlmv1.CodeExecutedEvent
	for _, ev := range events {
		if c := ev.GetCodeExecuted(); c != nil {
			code = c
		}
	}
	if code == nil || strings.TrimSpace(code.GetOutput()) != "5" {
		t.Errorf("code event %v", code)
	}
	if stream.Result().GetAnswer() != "42" {
		t.Errorf("result %v", stream.Result())
	}
}

func TestLiveUploadContext(t *testing.T) {
	s, client := live(t)
	ctx := context.Background()
	data := []byte(strings.Repeat("0123456789abcdef", 5<<16) + "é") // 5 MiB + 2 bytes
	up, err := client.UploadBytes(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if up.ContextID != "sha256:"+hex.EncodeToString(sum[:]) || up.SizeBytes != uint64(len(data)) {
		t.Errorf("uploaded %+v", up)
	}
	again, err := client.UploadBytes(ctx, data)
	if err != nil || *again != *up {
		t.Errorf("same bytes, same id: %+v %v", again, err)
	}
	model := s.turns(repl("FINAL(len(context))"))
	want := strconv.Itoa(5<<20 + 1)
	res, err := client.Complete(ctx, Request{Prompt: "len", Contexts: []Context{up.Context(rlmv1.ContextFormat_CONTEXT_FORMAT_TEXT)}, Model: model})
	if err != nil || res.GetAnswer() != want {
		t.Errorf("uploaded context: %v %v", res, err)
	}
	path := filepath.Join(s.dir, "ctx.txt")
	if err := ioutil.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err = client.Complete(ctx, Request{Prompt: "len", Contexts: []Context{File(path, rlmv1.ContextFormat_CONTEXT_FORMAT_TEXT)}, Model: model})
	if err != nil || res.GetAnswer() != want {
		t.Errorf("file context: %v %v", res, err)
	}
	res, err = client.Complete(ctx, Request{Prompt: "len", Contexts: []Context{Text(string(data))}, Model: model})
	if err != nil || res.GetAnswer() != want {
		t.Errorf("large inline context (uploaded automatically): %v %v", res, err)
	}
	docs, _ := JSON(map[string][]int{"a": {1, 2, 3}})
	res, err = client.Complete(ctx, Request{Prompt: "json", Contexts: []Context{docs}, Model: s.turns(repl("FINAL(sum(context['a']))"))})
	if err != nil || res.GetAnswer() != "6" {
		t.Errorf("json context: %v %v", res, err)
	}
}

func TestLiveErrors(t *testing.T) {
	s, client := live(t)
	ctx := context.Background()
	_, err := client.Complete(ctx, Request{Prompt: ""})
	if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), "spec.prompt") || status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty prompt: %v", err)
	}
	_, err = client.Complete(ctx, Request{Prompt: "x", Limits: &rlmv1.CompletionLimits{MaxIterations: 5000}})
	if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), "max_iterations") {
		t.Errorf("max_iterations: %v", err)
	}
	if _, err = client.GetTrajectory(ctx, "no-such-trajectory"); !errors.Is(err, ErrNotFound) {
		t.Errorf("trajectory: %v", err)
	}
	_, err = client.Complete(ctx, Request{Prompt: "x", Contexts: []Context{ContextID("sha256:"+strings.Repeat("0", 64), 0)}})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown context id: %v", err)
	}
	if _, err = client.Complete(ctx, Request{Prompt: "x", Sandbox: &rlmv1.SandboxLimits{Network: true}}); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("network: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err = client.Complete(short, Request{Prompt: "slow", Model: s.turns(repl("import time\ntime.sleep(30)"))}); !errors.Is(err, ErrDeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	port, _ := freePort()
	closed, err := Dial(ctx, "127.0.0.1:"+strconv.Itoa(port), WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer closed.Close()
	if _, err = closed.Complete(ctx, Request{Prompt: "x"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("closed port: %v", err)
	}
}

func TestLivePartialResults(t *testing.T) {
	s, client := live(t)
	ctx := context.Background()
	looping := s.turns(repl("print('again')"))
	res, err := client.Complete(ctx, Request{Prompt: "loop", Model: looping, Limits: &rlmv1.CompletionLimits{MaxIterations: 2}})
	if err != nil || !res.GetPartial() || ReasonName(res.GetTerminationReason()) != "MAX_ITERATIONS" {
		t.Errorf("max_iterations: %v %v", res, err)
	}
	res, err = client.Complete(ctx, Request{Prompt: "loop", Model: looping, FailOnPartial: true,
		Limits: &rlmv1.CompletionLimits{Timeout: durationpb.New(30 * time.Second), MaxIterations: 1}})
	if !errors.Is(err, ErrBudgetExceeded) || res == nil || !res.GetPartial() {
		t.Errorf("FailOnPartial: %v %v", res, err)
	}
	// Cancel a running completion from its first event.
	stream, err := client.StreamComplete(ctx, Request{Prompt: "cancel me", Model: s.turns(repl("import time\ntime.sleep(30)"), "FINAL(late)")})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if running, err := client.Cancel(ctx, first.GetCompletionId(), "go test"); err != nil || !running {
		t.Fatalf("cancel: %v %v", running, err)
	}
	for {
		if _, err := stream.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if ReasonName(stream.Result().GetTerminationReason()) != "CANCELLED" || !strings.Contains(stream.Result().GetDetail(), "go test") {
		t.Errorf("cancelled result %v", stream.Result())
	}
}

func TestLiveQueuedCompletion(t *testing.T) {
	s, client := live(t)
	ctx := context.Background()
	req := Request{Prompt: "queued", Contexts: []Context{Text("hello")}, Model: s.turns(repl("print(len(context))"), "FINAL(42)"),
		IdempotencyKey: fmt.Sprintf("go-live-%d", time.Now().UnixNano()), Limits: &rlmv1.CompletionLimits{MaxIterations: 5}}
	sub, err := client.Submit(ctx, req)
	if err != nil || sub.CompletionID == "" || sub.Duplicate {
		t.Fatalf("submit %+v %v", sub, err)
	}
	again, err := client.Submit(ctx, req)
	if err != nil || !again.Duplicate || again.CompletionID != sub.CompletionID {
		t.Errorf("same idempotency key: %+v %v, first %+v", again, err, sub)
	}
	res, err := client.Wait(ctx, sub.CompletionID)
	if err != nil || res.GetAnswer() != "42" || res.GetPartial() || res.GetCompletionId() != sub.CompletionID {
		t.Fatalf("wait %v %v", res, err)
	}
	st, err := client.GetCompletion(ctx, sub.CompletionID)
	if err != nil {
		t.Fatal(err)
	}
	if StateName(st.GetState()) != "FINISHED" || !Ended(st.GetState()) || st.GetResult().GetAnswer() != "42" ||
		st.GetEventCount() < 3 || st.GetAttempts() != 1 || st.GetQueuePosition() != 0 || st.GetSubmittedAt() == nil ||
		st.GetUsage().GetCalls() != 2 {
		t.Errorf("get %v", st)
	}
	stream, err := client.Watch(ctx, sub.CompletionID, st.GetEventCount()-1)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	events, err := recvAll(t, stream)
	if err != io.EOF {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].GetSequence() != st.GetEventCount() || events[0].GetResult().GetAnswer() != "42" ||
		stream.Result().GetAnswer() != "42" {
		t.Errorf("watch from %d: %v", st.GetEventCount()-1, events)
	}
	if _, err := client.GetCompletion(ctx, "no-such-completion"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
}

func TestLiveQueuedCancel(t *testing.T) {
	s, client := live(t)
	ctx := context.Background()
	sub, err := client.Submit(ctx, Request{Prompt: "cancel me", Model: s.turns(repl("import time\ntime.sleep(30)"), "FINAL(late)")})
	if err != nil {
		t.Fatal(err)
	}
	// Cancel once it runs (its first event), or while still queued.
	stream, err := client.Watch(ctx, sub.CompletionID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	stream.Close() // stops watching only
	if running, err := client.Cancel(ctx, sub.CompletionID, "go test"); err != nil || !running {
		t.Fatalf("cancel: %v %v", running, err)
	}
	res, err := client.Wait(ctx, sub.CompletionID, FailOnPartial())
	if !errors.Is(err, ErrCompletionCancelled) || ReasonName(res.GetTerminationReason()) != "CANCELLED" || !strings.Contains(res.GetDetail(), "go test") {
		t.Errorf("wait after cancel: %v %v", res, err)
	}
	if running, err := client.Cancel(ctx, sub.CompletionID, "again"); err != nil || running {
		t.Errorf("cancel after the end: %v %v", running, err)
	}
}
