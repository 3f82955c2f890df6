// Command rlm-example runs one completion against an RLM Runtime orchestrator.
//
//	rlm-example -target 127.0.0.1:50051 -prompt "How many lines?" -context-file app.log
//	rlm-example -stream -prompt "Summarise" -context "some text"
//	rlm-example -health
//
// The API key is read from $RLM_API_KEY (sent as `authorization: Bearer ...`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rlm-runtime/rlm/clients/go/rlm"
	rlmv1 "github.com/rlm-runtime/rlm/clients/go/rlmpb/rlm/v1"
)

func main() {
	target := flag.String("target", "127.0.0.1:50051", "orchestrator address (host:port or unix:///path)")
	prompt := flag.String("prompt", "", "the task")
	text := flag.String("context", "", "context text (optional)")
	file := flag.String("context-file", "", "file uploaded in 1 MiB chunks and used as the context (optional)")
	model := flag.String("model", "", "root model (provider/model or scripted:<path>); empty = server default")
	maxIterations := flag.Uint("max-iterations", 0, "iterations per RLM (0 = server default)")
	timeout := flag.Duration("timeout", 10*time.Minute, "deadline of the call")
	stream := flag.Bool("stream", false, "print events as they happen")
	health := flag.Bool("health", false, "only run the gRPC health check")
	strict := flag.Bool("fail-on-partial", false, "exit 3 when the completion ends without FINAL")
	flag.Parse()

	ctx := context.Background()
	client, err := rlm.Dial(ctx, *target, rlm.WithAPIKey(os.Getenv("RLM_API_KEY")), rlm.WithTimeout(*timeout))
	if err != nil {
		fail(err)
	}
	defer client.Close()

	if *health {
		status, err := client.Health(ctx, "")
		if err != nil {
			fail(err)
		}
		fmt.Println(status)
		return
	}
	if *prompt == "" {
		fmt.Fprintln(os.Stderr, "rlm-example: -prompt is required")
		os.Exit(2)
	}
	req := rlm.Request{Prompt: *prompt, Model: *model, FailOnPartial: *strict}
	switch {
	case *file != "":
		req.Contexts = []rlm.Context{rlm.File(*file, rlmv1.ContextFormat_CONTEXT_FORMAT_TEXT)}
	case *text != "":
		req.Contexts = []rlm.Context{rlm.Text(*text)}
	}
	if *maxIterations > 0 {
		req.Limits = &rlmv1.CompletionLimits{MaxIterations: uint32(*maxIterations)}
	}

	var result *rlmv1.CompletionResult
	if *stream {
		s, err := client.StreamComplete(ctx, req)
		if err != nil {
			fail(err)
		}
		defer s.Close()
		for {
			event, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				report(s.Result(), err)
			}
			fmt.Printf("#%d node %s: %s\n", event.GetSequence(), event.GetNodeId(), describe(event))
		}
		result = s.Result()
	} else {
		result, err = client.Complete(ctx, req)
		if err != nil {
			report(result, err)
		}
	}
	printResult(result)
}

func describe(e *rlmv1.CompletionEvent) string {
	switch ev := e.GetEvent().(type) {
	case *rlmv1.CompletionEvent_IterationStarted:
		return fmt.Sprintf("iteration %d started", ev.IterationStarted.GetIteration())
	case *rlmv1.CompletionEvent_ModelCallFinished:
		return fmt.Sprintf("model %s answered (%d tokens)", ev.ModelCallFinished.GetModel(),
			ev.ModelCallFinished.GetUsage().GetInputTokens()+ev.ModelCallFinished.GetUsage().GetOutputTokens())
	case *rlmv1.CompletionEvent_CodeExecuted:
		return fmt.Sprintf("code ran: %q", ev.CodeExecuted.GetOutput())
	case *rlmv1.CompletionEvent_SubcallStarted:
		return fmt.Sprintf("%d sub-call(s) started", len(ev.SubcallStarted.GetPrompts()))
	case *rlmv1.CompletionEvent_SubcallFinished:
		return fmt.Sprintf("sub-call %d finished", ev.SubcallFinished.GetSubcallId())
	case *rlmv1.CompletionEvent_Result:
		return "result: " + rlm.ReasonName(ev.Result.GetTerminationReason())
	default:
		return "event"
	}
}

func printResult(r *rlmv1.CompletionResult) {
	fmt.Printf("answer: %s\nreason: %s  partial: %v  iterations: %d  tokens: %d\n",
		r.GetAnswer(), rlm.ReasonName(r.GetTerminationReason()), r.GetPartial(), r.GetIterations(),
		r.GetTotalUsage().GetInputTokens()+r.GetTotalUsage().GetOutputTokens())
	if r.GetDetail() != "" {
		fmt.Printf("detail: %s\n", r.GetDetail())
	}
}

func report(result *rlmv1.CompletionResult, err error) {
	if errors.Is(err, rlm.ErrIncomplete) && result != nil {
		printResult(result)
		fmt.Fprintln(os.Stderr, "rlm-example:", err)
		os.Exit(3)
	}
	fail(err)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "rlm-example:", err)
	os.Exit(1)
}
