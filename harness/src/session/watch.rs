//! What the engine was asked while a case ran: the [`EngineView`] of every
//! request for the case's prompt, from the in-process engine's feed.
//!
//! A case holds its prompt for as long as it runs (see
//! [`crate::prompt_lock`]), and an engine publishes a request before its
//! first output, so once the answer is in, the requests for that prompt
//! that arrived since the watch began are the case's, all of them.

use mock_engine::Engine;
use mock_engine::engine_view::EngineView;
use tokio::sync::broadcast::{self, error::TryRecvError};

/// Watches one engine for the requests of one prompt.
#[derive(Debug)]
pub struct EngineWatch {
    feed: broadcast::Receiver<EngineView>,
    prompt: Vec<u32>,
}

impl EngineWatch {
    /// Starts watching; start before the request is sent.
    pub fn new(engine: &Engine, prompt: Vec<u32>) -> Self {
        Self {
            feed: engine.watch(),
            prompt,
        }
    }

    /// The views of the requests for the prompt that arrived since
    /// [`Self::new`], in arrival order. An error when the feed dropped
    /// some (more than its capacity arrived before this was read): then
    /// the views cannot be told complete.
    pub fn seen(mut self) -> Result<Vec<EngineView>, String> {
        let mut views = Vec::new();
        loop {
            match self.feed.try_recv() {
                Ok(view) if view.prompt_token_ids == self.prompt => views.push(view),
                Ok(_) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => return Ok(views),
                Err(TryRecvError::Lagged(n)) => {
                    return Err(format!(
                        "the engine's view is incomplete: {n} arrivals were dropped before they were read"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mock_engine::EngineRequest;

    fn request(id: &str, prompt: Vec<u32>) -> EngineRequest {
        let mut request = EngineRequest::new(id, prompt.clone());
        request.view = Some(EngineView {
            request_id: id.into(),
            prompt_token_ids: prompt,
            ..EngineView::default()
        });
        request
    }

    #[tokio::test]
    async fn a_watch_sees_the_requests_of_its_prompt_that_arrive_after_it_starts() {
        let engine = Engine::default();
        drop(engine.submit(request("before", vec![1, 2])));
        let watch = EngineWatch::new(&engine, vec![1, 2]);
        drop(engine.submit(request("other prompt", vec![3])));
        drop(engine.submit(request("a", vec![1, 2])));
        drop(engine.submit(EngineRequest::new("no view", vec![1, 2])));
        drop(engine.submit(request("b", vec![1, 2])));
        let ids: Vec<String> = watch
            .seen()
            .unwrap()
            .into_iter()
            .map(|v| v.request_id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_feed_that_dropped_arrivals_is_an_error_not_a_short_list() {
        let engine = Engine::default();
        let watch = EngineWatch::new(&engine, vec![1]);
        for i in 0..1100 {
            drop(engine.submit(request(&i.to_string(), vec![1])));
        }
        let e = watch.seen().unwrap_err();
        assert!(e.contains("incomplete"), "{e}");
    }
}
