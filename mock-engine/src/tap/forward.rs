//! After READY: every message both ways, unchanged, then a record of it.
//!
//! One task per direction of each socket pair, so the hot direction (engine
//! outputs to the frontend) never waits behind the other. Each task takes
//! the receipt time, forwards, and only then hands the frames to the
//! journal's decoder. The tasks are aborted when [`forward`]'s future is
//! dropped, which closes every socket.

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use futures::stream::{FuturesUnordered, SelectAll};
use tokio::task::JoinHandle;
use zeromq::{
    DealerSocket, PullSocket, PushSocket, RouterSocket, SocketEvent, SocketRecv, SocketSend,
    ZmqMessage,
};

use super::Direction;
use super::journal::{Channel, Raw, Recorder};

/// Which peer a socket faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Engine,
    Frontend,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Engine => "the engine",
            Self::Frontend => "the frontend",
        })
    }
}

/// One input: the engine's DEALER is connected to `from_engine`;
/// `to_frontend` is connected to the frontend's ROUTER as the engine.
pub(crate) struct InputPair {
    pub index: usize,
    pub identity: Bytes,
    pub from_engine: RouterSocket,
    pub to_frontend: DealerSocket,
}

/// One output: the engine's PUSH feeds `from_engine`; `to_frontend` feeds
/// the frontend's PULL.
pub(crate) struct OutputPair {
    pub index: usize,
    pub from_engine: PullSocket,
    pub to_frontend: PushSocket,
}

/// Connection events of every data socket, by the side it faces: a
/// disconnect is how the tap learns that a side went away (zeromq's
/// receive just waits for a new peer).
#[derive(Default)]
pub(crate) struct Monitors(SelectAll<futures::stream::Map<mpsc::Receiver<SocketEvent>, Tag>>);

type Tag = Box<dyn FnMut(SocketEvent) -> (Side, SocketEvent) + Send>;

impl Monitors {
    pub fn watch(&mut self, side: Side, events: mpsc::Receiver<SocketEvent>) {
        let tag: Tag = Box::new(move |event| (side, event));
        self.0.push(events.map(tag));
    }

    /// The next side to go away.
    async fn gone(&mut self) -> (Side, String) {
        loop {
            match self.0.next().await {
                Some((side, SocketEvent::Disconnected(peer))) => {
                    return (side, format!("peer {:?} disconnected", Bytes::from(peer)));
                }
                Some(_) => {}
                // Monitors close only with their sockets.
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// Why a forwarding task stopped: its side went away.
struct Ended {
    side: Side,
    why: String,
}

/// Aborts the forwarding tasks when dropped, so that cancelling the tap
/// (dropping its future, aborting its task) closes every socket.
struct Tasks(FuturesUnordered<JoinHandle<Ended>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in self.0.iter() {
            task.abort();
        }
    }
}

/// Forwards until a side goes away; returns which and why.
pub(crate) async fn forward(
    inputs: Vec<InputPair>,
    outputs: Vec<OutputPair>,
    mut monitors: Monitors,
    recorder: Recorder,
) -> (String, String) {
    let mut tasks = Tasks(FuturesUnordered::new());
    for pair in inputs {
        let (to_engine, from_engine) = pair.from_engine.split();
        let (to_frontend, from_frontend) = pair.to_frontend.split();
        tasks.0.push(tokio::spawn(requests(
            pair.identity,
            from_frontend,
            to_engine,
            recorder.clone(),
        )));
        tasks.0.push(tokio::spawn(input_replies(
            pair.index,
            from_engine,
            to_frontend,
            recorder.clone(),
        )));
    }
    for pair in outputs {
        tasks
            .0
            .push(tokio::spawn(outputs_to_frontend(pair, recorder.clone())));
    }
    drop(recorder);
    let (side, why) = tokio::select! {
        Some(ended) = tasks.0.next() => match ended {
            Ok(Ended { side, why }) => (side, why),
            Err(e) => (Side::Engine, format!("a forwarding task failed: {e}")),
        },
        (side, why) = monitors.gone() => (side, why),
    };
    (side.to_string(), why)
}

/// Frontend input -> engine: the frontend's ROUTER has already taken the
/// identity off; the tap's ROUTER needs it back in front.
async fn requests(
    identity: Bytes,
    mut from_frontend: zeromq::DealerRecvHalf,
    mut to_engine: zeromq::RouterSendHalf,
    recorder: Recorder,
) -> Ended {
    loop {
        let message = match from_frontend.recv().await {
            Ok(m) => m,
            Err(e) => return ended(Side::Frontend, "receiving a request", e),
        };
        let at = Instant::now();
        let frames: Vec<Bytes> = message.iter().cloned().collect();
        let mut routed = message;
        routed.push_front(identity.clone());
        if let Err(e) = to_engine.send(routed).await {
            return ended(Side::Engine, "forwarding a request", e);
        }
        recorder.record(Raw {
            at,
            channel: Channel::Input,
            direction: Direction::ToEngine,
            frames,
        });
    }
}

/// Engine -> frontend on an input socket: nothing after the ready response
/// in the releases we know, but a tap passes on whatever comes.
async fn input_replies(
    index: usize,
    mut from_engine: zeromq::RouterRecvHalf,
    mut to_frontend: zeromq::DealerSendHalf,
    recorder: Recorder,
) -> Ended {
    loop {
        let message = match from_engine.recv().await {
            Ok(m) => m,
            Err(e) => return ended(Side::Engine, "receiving on an input socket", e),
        };
        let at = Instant::now();
        let mut frames = message.into_vec();
        frames.remove(0);
        let Ok(unrouted) = ZmqMessage::try_from(frames.clone()) else {
            tracing::warn!(
                input = index,
                "tap: an empty message from the engine on an input socket; dropped"
            );
            continue;
        };
        if let Err(e) = to_frontend.send(unrouted).await {
            return ended(Side::Frontend, "forwarding on an input socket", e);
        }
        recorder.record(Raw {
            at,
            channel: Channel::Input,
            direction: Direction::ToFrontend,
            frames,
        });
    }
}

/// Engine outputs -> frontend, ENGINE_CORE_DEAD included.
async fn outputs_to_frontend(mut pair: OutputPair, recorder: Recorder) -> Ended {
    loop {
        let message = match pair.from_engine.recv().await {
            Ok(m) => m,
            Err(e) => return ended(Side::Engine, "receiving outputs", e),
        };
        let at = Instant::now();
        let frames: Vec<Bytes> = message.iter().cloned().collect();
        if let Err(e) = pair.to_frontend.send(message).await {
            return ended(
                Side::Frontend,
                &format!("forwarding outputs on output {}", pair.index),
                e,
            );
        }
        recorder.record(Raw {
            at,
            channel: Channel::Output,
            direction: Direction::ToFrontend,
            frames,
        });
    }
}

fn ended(side: Side, doing: &str, error: zeromq::ZmqError) -> Ended {
    Ended {
        side,
        why: format!("{doing}: {error}"),
    }
}
