//! How every route's stream goes on the wire: each chunk a `data:` event, an
//! error as an in-band event followed only by `[DONE]`, `[DONE]` last, and a
//! stream cut off by a shutdown ended the same way, by the one path here.

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, stream};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::SHUTTING_DOWN;
use crate::error::ApiError;

/// What a stream sends, before it becomes SSE.
#[derive(Debug, Clone)]
pub enum SseItem<C> {
    Chunk(C),
    Error(ApiError),
    Done,
}

impl<C: Serialize> SseItem<C> {
    pub fn to_event(&self) -> Event {
        let event = match self {
            Self::Chunk(chunk) => Event::default().json_data(chunk),
            Self::Error(error) => Event::default().json_data(error.body()),
            Self::Done => return Event::default().data("[DONE]"),
        };
        event.expect("stream messages serialise to JSON")
    }
}

/// The response for a stream of chunk results: an error ends the chunks,
/// `[DONE]` ends the stream, and `cut_off` (a shutdown past its grace) ends
/// it early with an in-band error, as for an engine failure mid-stream.
pub fn respond<C: Serialize + Send + 'static>(
    chunks: impl Stream<Item = Result<C, ApiError>> + Send + 'static,
    cut_off: CancellationToken,
) -> Response {
    let items = chunks
        .scan(false, |failed, item| {
            if *failed {
                return futures::future::ready(None);
            }
            let item = match item {
                Ok(chunk) => SseItem::Chunk(chunk),
                Err(error) => {
                    *failed = true;
                    SseItem::Error(error)
                }
            };
            futures::future::ready(Some(item))
        })
        .take_until(cut_off.clone().cancelled_owned())
        .chain(
            stream::once(async move { cut_off.is_cancelled() }).flat_map(|cut| {
                let ending = cut.then(|| SseItem::Error(ApiError::server_error(SHUTTING_DOWN)));
                stream::iter(ending.into_iter().chain([SseItem::Done]))
            }),
        )
        .map(|item| Ok::<_, Infallible>(item.to_event()));
    Sse::new(items).into_response()
}
