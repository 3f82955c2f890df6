//! Drives `StreamComplete` to its result, updating the view, and turns the
//! first Ctrl-C into `CancelCompletion` (the partial result still arrives on
//! the stream); a second Ctrl-C stops waiting.

use std::time::Duration;

use rlm_proto::rlm::v1::completion_event::Event;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::{
    CancelCompletionRequest, CompletionResult, CompletionSpec, StreamCompleteRequest,
};
use tokio::signal::unix::{SignalKind, signal};
use tonic::transport::Channel;

use super::progress::Tally;
use super::view::View;
use crate::exit::{self, Failure};

const TICK: Duration = Duration::from_millis(100);
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn complete(
    client: &mut RlmServiceClient<Channel>,
    spec: CompletionSpec,
    view: &mut View,
) -> Result<CompletionResult, Failure> {
    let mut interrupts =
        signal(SignalKind::interrupt()).map_err(|e| Failure::other(format!("SIGINT: {e}")))?;
    let mut stream = client
        .stream_complete(StreamCompleteRequest { spec: Some(spec) })
        .await
        .map_err(|status| Failure::from_status(&status, "StreamComplete"))?
        .into_inner();
    let mut tally = Tally::default();
    let mut ticker = tokio::time::interval(TICK);
    let mut cancel_wanted = false;
    let mut cancel_sent = false;
    loop {
        tokio::select! {
            message = stream.message() => {
                let event = match message {
                    Ok(Some(response)) => match response.event {
                        Some(event) => event,
                        None => continue,
                    },
                    Ok(None) => {
                        view.clear();
                        return Err(Failure::other(
                            "StreamComplete ended without a result event (server bug: the last message must carry the result)",
                        ));
                    }
                    Err(status) => {
                        view.clear();
                        return Err(Failure::from_status(&status, "StreamComplete"));
                    }
                };
                tally.observe(&event);
                view.event(&tally, &event);
                if let Some(Event::Result(result)) = event.event {
                    view.clear();
                    return Ok(result);
                }
            }
            _ = interrupts.recv() => {
                if cancel_wanted {
                    view.clear();
                    return Err(Failure::new(
                        exit::INTERRUPTED,
                        "interrupted again: stopped waiting; the completion is cancelled when the stream closes",
                    ));
                }
                cancel_wanted = true;
                view.warn("cancelling the completion (Ctrl-C again to stop waiting)...");
            }
            _ = ticker.tick() => view.tick(&tally),
        }
        if cancel_wanted
            && !cancel_sent
            && let Some(id) = tally.completion_id.clone()
        {
            cancel_sent = true;
            cancel(client, id, view).await;
        }
    }
}

async fn cancel(client: &mut RlmServiceClient<Channel>, completion_id: String, view: &mut View) {
    let request = CancelCompletionRequest {
        completion_id,
        reason: "cancelled from the rlm CLI (Ctrl-C)".to_owned(),
    };
    match tokio::time::timeout(CANCEL_TIMEOUT, client.cancel_completion(request)).await {
        Ok(Ok(response)) if !response.get_ref().was_running => {
            view.warn("the completion had already ended");
        }
        Ok(Ok(_)) => {}
        Ok(Err(status)) => view.warn(&Failure::from_status(&status, "CancelCompletion").message),
        Err(_) => {
            view.warn("CancelCompletion did not answer in time; still waiting for the result")
        }
    }
}
