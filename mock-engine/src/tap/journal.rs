//! The record: raw frames in, decoded [`TapEvent`]s out, off the forwarding
//! path. The forwarding tasks hand each message's frames (cheap `Bytes`
//! clones) to one decoding task over an unbounded channel, so a slow decode
//! or a slow journal reader never delays a message.

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Direction, TapEvent, Tapped};
use crate::wire::{
    AbortRequest, ENGINE_CORE_DEAD, EngineCoreOutputs, EngineCoreRequest, Layout, RequestType,
    UtilityCall,
};

/// Which socket pair a message crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    /// The input sockets: requests to the engine (and, from the engine,
    /// nothing after the ready response in vLLM 0.32/0.33).
    Input,
    /// The output sockets: `EngineCoreOutputs` and `ENGINE_CORE_DEAD`.
    Output,
}

/// One forwarded message, as it was on the wire (no identity frame).
pub(crate) struct Raw {
    pub at: Instant,
    pub channel: Channel,
    pub direction: Direction,
    pub frames: Vec<Bytes>,
}

/// Where the forwarding tasks drop what they forwarded.
#[derive(Clone)]
pub(crate) struct Recorder(mpsc::UnboundedSender<Raw>);

impl Recorder {
    pub fn record(&self, raw: Raw) {
        // The decoder ends only when every recorder is gone.
        let _ = self.0.send(raw);
    }
}

/// Starts the decoding task; it ends once every [`Recorder`] is dropped and
/// what they sent is decoded, which closes `journal`.
pub(crate) fn spawn_decoder(
    layout: &'static Layout,
    journal: mpsc::UnboundedSender<TapEvent>,
) -> Recorder {
    let (tx, mut rx) = mpsc::unbounded_channel::<Raw>();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 256).await > 0 {
            if journal.is_closed() {
                batch.clear();
                continue;
            }
            for raw in batch.drain(..) {
                let event = TapEvent {
                    at: raw.at,
                    message: decode(layout, raw.channel, raw.direction, &raw.frames),
                    frames: raw.frames,
                };
                // A closed journal is the reader's choice; forwarding goes on,
                // so keep draining (cheaply) rather than stall the senders.
                let _ = journal.send(event);
            }
        }
    });
    Recorder(tx)
}

/// What one message means, for the configured layout. Never fails: what does
/// not decode is recorded as [`Tapped::Undecodable`] with the reason.
pub(crate) fn decode(
    layout: &Layout,
    channel: Channel,
    direction: Direction,
    frames: &[Bytes],
) -> Tapped {
    let undecodable = |error: String| Tapped::Undecodable { direction, error };
    let Some(first) = frames.first() else {
        return undecodable("an empty message".into());
    };
    match (channel, direction) {
        (Channel::Input, Direction::ToEngine) => {
            let payload = frames.get(1).map_or(&[][..], |f| &f[..]);
            let kind = match RequestType::from_frame(first) {
                Ok(kind) => kind,
                Err(e) => return undecodable(e.to_string()),
            };
            match kind {
                RequestType::Add => match EngineCoreRequest::decode_with_frames(
                    layout,
                    payload,
                    frames.get(1..).unwrap_or(&[]),
                ) {
                    Ok(request) => Tapped::Add(request),
                    Err(e) => undecodable(e.to_string()),
                },
                RequestType::Abort => match AbortRequest::decode(payload) {
                    Ok(AbortRequest(ids)) => Tapped::Abort(ids),
                    Err(e) => undecodable(e.to_string()),
                },
                RequestType::Utility => match UtilityCall::decode(payload) {
                    Ok(call) => Tapped::Other {
                        direction,
                        what: format!("utility call `{}` (call id {})", call.method, call.call_id),
                    },
                    Err(e) => undecodable(e.to_string()),
                },
                RequestType::StartDpWave => Tapped::Other {
                    direction,
                    what: "START_DP_WAVE".into(),
                },
            }
        }
        (Channel::Output, Direction::ToFrontend) => {
            if frames.len() == 1 && &first[..] == ENGINE_CORE_DEAD {
                return Tapped::EngineDead;
            }
            match EngineCoreOutputs::decode(layout, first, &frames[1..]) {
                Ok(outputs) => Tapped::Outputs(outputs),
                Err(e) => undecodable(e.to_string()),
            }
        }
        (Channel::Input, Direction::ToFrontend) => Tapped::Other {
            direction,
            what: format!(
                "a {}-frame message from the engine on the input socket",
                frames.len()
            ),
        },
        // Output sockets are PUSH -> PULL: nothing flows back.
        (Channel::Output, Direction::ToEngine) => Tapped::Other {
            direction,
            what: "a message to the engine on an output socket".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::FinishReason;
    use crate::wire::{EngineCoreOutput, VllmVersion};

    fn frames(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    }

    #[test]
    fn requests_decode_by_type_and_garbage_is_undecodable() {
        let layout = VllmVersion::V0_32_0.layout();
        let add = EngineCoreRequest::new("r-1", vec![1, 2]).encode(layout);
        let decoded = decode(
            layout,
            Channel::Input,
            Direction::ToEngine,
            &frames(&[&[0], &add]),
        );
        let Tapped::Add(request) = decoded else {
            panic!("{decoded:?}")
        };
        assert_eq!(request.prompt_token_ids, Some(vec![1, 2]));

        let abort = AbortRequest(vec!["r-1".into()]).encode();
        assert_eq!(
            decode(
                layout,
                Channel::Input,
                Direction::ToEngine,
                &frames(&[&[1], &abort])
            ),
            Tapped::Abort(vec!["r-1".into()])
        );
        let call = UtilityCall {
            client_index: 0,
            call_id: 7,
            method: "get_supported_tasks".into(),
            args: vec![],
        };
        let other = decode(
            layout,
            Channel::Input,
            Direction::ToEngine,
            &frames(&[&[3], &call.encode()]),
        );
        assert!(
            matches!(&other, Tapped::Other { what, direction: Direction::ToEngine } if what.contains("get_supported_tasks")),
            "{other:?}"
        );
        for garbage in [
            frames(&[&[9], b"x"]),
            frames(&[&[0], b"\xc1"]),
            frames(&[b"long"]),
        ] {
            let decoded = decode(layout, Channel::Input, Direction::ToEngine, &garbage);
            assert!(
                matches!(
                    decoded,
                    Tapped::Undecodable {
                        direction: Direction::ToEngine,
                        ..
                    }
                ),
                "{decoded:?}"
            );
        }
    }

    #[test]
    fn outputs_dead_and_garbage_from_the_engine() {
        let layout = VllmVersion::V0_33_0.layout();
        let mut out = EngineCoreOutput::tokens("r-1", vec![5]);
        out.finish_reason = Some(FinishReason::Length);
        let message = EngineCoreOutputs::batch(0, vec![out], 1.0);
        let decoded = decode(
            layout,
            Channel::Output,
            Direction::ToFrontend,
            &frames(&[&message.encode(layout)]),
        );
        assert_eq!(decoded, Tapped::Outputs(message));
        assert_eq!(
            decode(
                layout,
                Channel::Output,
                Direction::ToFrontend,
                &frames(&[ENGINE_CORE_DEAD])
            ),
            Tapped::EngineDead
        );
        let decoded = decode(
            layout,
            Channel::Output,
            Direction::ToFrontend,
            &frames(&[b"\x93\x01"]),
        );
        let Tapped::Undecodable { direction, error } = decoded else {
            panic!("{decoded:?}")
        };
        assert_eq!(direction, Direction::ToFrontend);
        assert!(error.contains("EngineCoreOutputs"), "{error}");
    }
}
