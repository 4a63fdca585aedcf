//! Start-up through the tap: the tap plays the frontend to the engine and the
//! engine to the frontend, so that every later message crosses it.
//!
//! Engine                      tap                              frontend
//!   HELLO  ──► handshake ROUTER ──► handshake DEALER (same id) ──► ROUTER
//!          ◄── init (tap's addresses) ◄── init (frontend's addresses)
//!   ready response ──► tap input ROUTER i ──► DEALER i (same id) ──► input i
//!   PUSH ──► tap output PULL i                PUSH i ──► output PULL i
//!   READY  ──► handshake ROUTER ──► handshake DEALER ──► ROUTER

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rmpv::Value;
use tokio::time::Instant;
use zeromq::{
    DealerSocket, PullSocket, PushSocket, RouterSocket, Socket, SocketOptions, SocketRecv,
    SocketSend, ZmqMessage,
};

use super::forward::{InputPair, Monitors, OutputPair, Side};
use super::{TapError, TapOptions};
use crate::wire::{self, HandshakeStatus, InitMessage, StatusKind};

/// Everything the forwarding needs, connected and past READY.
pub(crate) struct Connected {
    pub inputs: Vec<InputPair>,
    pub outputs: Vec<OutputPair>,
    pub monitors: Monitors,
    /// Kept open for the tap's life: closing them early could drop READY
    /// before it is flushed (the peers may close theirs; that is no end).
    pub _handshakes: (RouterSocket, DealerSocket),
}

pub(crate) async fn connect(opts: &TapOptions) -> Result<Connected, TapError> {
    let deadline = Instant::now() + opts.handshake_timeout;
    let stage = Arc::new(Mutex::new(String::from("starting")));
    match tokio::time::timeout_at(deadline, steps(opts, stage.clone())).await {
        Ok(result) => result,
        Err(_) => Err(TapError::HandshakeTimeout {
            frontend: opts.frontend_handshake.clone(),
            engine: opts.engine_handshake.clone(),
            timeout: opts.handshake_timeout,
            stage: stage.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }),
    }
}

/// The engine's identity on every socket the tap connects to the frontend:
/// the frontend routes by it.
fn identity_options(identity: &Bytes) -> Result<SocketOptions, TapError> {
    let mut options = SocketOptions::default();
    let id = identity
        .clone()
        .try_into()
        .map_err(TapError::zmq("taking on the engine's identity"))?;
    options.peer_identity(id);
    // The handshake deadline covers connecting; a second, shorter timer in
    // zeromq would only hide which stage was stuck.
    options.no_connect_timeout();
    Ok(options)
}

async fn steps(opts: &TapOptions, stage: Arc<Mutex<String>>) -> Result<Connected, TapError> {
    let at = |s: String| *stage.lock().unwrap_or_else(|e| e.into_inner()) = s;
    let frontend = &opts.frontend_handshake;
    let engine = &opts.engine_handshake;

    at(format!("binding the engine handshake socket {engine}"));
    let mut engine_hs = RouterSocket::new();
    engine_hs
        .bind(engine)
        .await
        .map_err(|source| TapError::Bind {
            what: "the engine handshake socket",
            address: engine.clone(),
            source,
        })?;
    at(format!(
        "waiting for an engine to connect to {engine} and send HELLO"
    ));
    let hello = engine_hs
        .recv()
        .await
        .map_err(TapError::zmq(format!("receiving HELLO on {engine}")))?;
    let (identity, hello) = routed("the engine's HELLO", hello)?;
    expect_status(&hello, StatusKind::Hello, "HELLO");
    tracing::info!(identity = ?&identity[..], %engine, "tap: engine said HELLO");

    at(format!(
        "connecting to the frontend's handshake socket {frontend}"
    ));
    let mut frontend_hs = DealerSocket::with_options(identity_options(&identity)?);
    frontend_hs
        .connect(frontend)
        .await
        .map_err(TapError::zmq(format!("connecting to handshake {frontend}")))?;
    frontend_hs
        .send(ZmqMessage::from(hello))
        .await
        .map_err(TapError::zmq(format!("forwarding HELLO to {frontend}")))?;
    at(format!(
        "waiting for the init message from the frontend at {frontend}"
    ));
    let init = frontend_hs.recv().await.map_err(TapError::zmq(format!(
        "receiving the init message from {frontend}"
    )))?;
    let init = single("the frontend's init message", init)?;
    let addresses = InitMessage::decode(&init).map_err(|source| TapError::Handshake {
        what: "init message from the frontend",
        source,
    })?;

    at("binding the tap's input and output sockets".into());
    let mut monitors = Monitors::default();
    let host = data_host(engine);
    let mut engine_inputs = Vec::new();
    let mut tap_inputs = Vec::new();
    for _ in &addresses.inputs {
        let mut socket = RouterSocket::new();
        monitors.watch(Side::Engine, socket.monitor());
        let address = bind(&mut socket, &host, "an input socket").await?;
        engine_inputs.push(socket);
        tap_inputs.push(address);
    }
    let mut outputs = Vec::new();
    let mut tap_outputs = Vec::new();
    for frontend_output in &addresses.outputs {
        let mut from_engine = PullSocket::new();
        monitors.watch(Side::Engine, from_engine.monitor());
        let address = bind(&mut from_engine, &host, "an output socket").await?;
        at(format!(
            "connecting to the frontend's output {frontend_output}"
        ));
        let mut to_frontend = PushSocket::new();
        monitors.watch(Side::Frontend, to_frontend.monitor());
        to_frontend
            .connect(frontend_output)
            .await
            .map_err(TapError::zmq(format!(
                "connecting output {frontend_output}"
            )))?;
        outputs.push(OutputPair {
            index: outputs.len(),
            from_engine,
            to_frontend,
        });
        tap_outputs.push(address);
    }

    let patched = patch_init(&init, &tap_inputs, &tap_outputs)?;
    engine_hs
        .send(routed_message(&identity, vec![Bytes::from(patched)])?)
        .await
        .map_err(TapError::zmq(format!(
            "sending the init message on {engine}"
        )))?;
    tracing::info!(inputs = ?tap_inputs, outputs = ?tap_outputs, "tap: init message sent to the engine");

    // The engine sends a ready response on each input and READY on the
    // handshake socket without waiting for anything; forward each as it
    // comes, in the order it comes.
    at(format!(
        "waiting for the engine's ready response on {} and READY on {engine}",
        tap_inputs.join(", ")
    ));
    let mut pending: FuturesUnordered<_> = engine_inputs
        .into_iter()
        .enumerate()
        .map(|(i, mut socket)| async move {
            let message = socket.recv().await;
            (i, socket, message)
        })
        .collect();
    let mut inputs: Vec<Option<InputPair>> = (0..addresses.inputs.len()).map(|_| None).collect();
    let mut ready_forwarded = false;
    while !(ready_forwarded && pending.is_empty()) {
        tokio::select! {
            Some((i, socket, message)) = pending.next() => {
                let (peer, frames) = routed_frames(
                    "the engine's ready response",
                    message.map_err(TapError::zmq(format!("receiving the ready response on {}", tap_inputs[i])))?,
                )?;
                if peer != identity {
                    tracing::warn!(hello = ?&identity[..], input = ?&peer[..], "tap: the engine's identity changed between HELLO and the ready response");
                }
                let frontend_input = &addresses.inputs[i];
                let mut to_frontend = DealerSocket::with_options(identity_options(&peer)?);
                monitors.watch(Side::Frontend, to_frontend.monitor());
                to_frontend
                    .connect(frontend_input)
                    .await
                    .map_err(TapError::zmq(format!("connecting input {frontend_input}")))?;
                // The frontend's ROUTER learns the engine from this first message.
                to_frontend
                    .send(message_of(frames)?)
                    .await
                    .map_err(TapError::zmq(format!("forwarding the ready response to {frontend_input}")))?;
                inputs[i] = Some(InputPair { index: i, identity: peer, from_engine: socket, to_frontend });
            }
            ready = engine_hs.recv(), if !ready_forwarded => {
                let ready = ready.map_err(TapError::zmq(format!("receiving READY on {engine}")))?;
                let (_, ready) = routed("the engine's READY", ready)?;
                expect_status(&ready, StatusKind::Ready, "READY");
                frontend_hs
                    .send(ZmqMessage::from(ready))
                    .await
                    .map_err(TapError::zmq(format!("forwarding READY to {frontend}")))?;
                ready_forwarded = true;
            }
        }
    }
    tracing::info!(%frontend, %engine, "tap: READY forwarded; forwarding every message");
    Ok(Connected {
        inputs: inputs.into_iter().flatten().collect(),
        outputs,
        monitors,
        _handshakes: (engine_hs, frontend_hs),
    })
}

/// The tap's own sockets go on the host the engine already reaches (the
/// engine handshake's), on ephemeral ports.
fn data_host(engine_handshake: &str) -> String {
    engine_handshake
        .strip_prefix("tcp://")
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(host, _)| match host {
            "*" => "0.0.0.0".to_string(),
            host => host.to_string(),
        })
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

async fn bind(
    socket: &mut impl Socket,
    host: &str,
    what: &'static str,
) -> Result<String, TapError> {
    let address = format!("tcp://{host}:0");
    let endpoint = socket
        .bind(&address)
        .await
        .map_err(|source| TapError::Bind {
            what,
            address,
            source,
        })?;
    Ok(endpoint.to_string())
}

/// The frontend's init message with the tap's addresses in place of its
/// own; every other key (parallel config, coordinator and stats addresses,
/// keys of later releases) passes through as sent.
fn patch_init(init: &[u8], inputs: &[String], outputs: &[String]) -> Result<Vec<u8>, TapError> {
    let bad = |source| TapError::Handshake {
        what: "init message from the frontend",
        source,
    };
    let mut value = wire::from_bytes("init message", init).map_err(bad)?;
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect());
    let Value::Map(top) = &mut value else {
        return Err(bad(wire::WireError::Missing {
            message: "init message",
            field: "addresses",
        }));
    };
    let addresses = top
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some("addresses"))
        .map(|(_, v)| v);
    let Some(Value::Map(addresses)) = addresses else {
        return Err(bad(wire::WireError::Missing {
            message: "init message",
            field: "addresses",
        }));
    };
    for (key, v) in addresses.iter_mut() {
        match key.as_str() {
            Some("inputs") => *v = strings(inputs),
            Some("outputs") => *v = strings(outputs),
            _ => {}
        }
    }
    Ok(wire::to_bytes(&value))
}

/// A ROUTER's message: the peer's identity, then one payload frame.
fn routed(what: &'static str, message: ZmqMessage) -> Result<(Bytes, Bytes), TapError> {
    let (identity, mut frames) = routed_frames(what, message)?;
    if frames.len() != 1 {
        return Err(TapError::Frames {
            what,
            frames: frames.len(),
        });
    }
    Ok((identity, frames.swap_remove(0)))
}

fn routed_frames(what: &'static str, message: ZmqMessage) -> Result<(Bytes, Vec<Bytes>), TapError> {
    let mut frames = message.into_vec();
    if frames.len() < 2 {
        return Err(TapError::Frames {
            what,
            frames: frames.len().saturating_sub(1),
        });
    }
    let identity = frames.remove(0);
    Ok((identity, frames))
}

fn single(what: &'static str, message: ZmqMessage) -> Result<Bytes, TapError> {
    let mut frames = message.into_vec();
    if frames.len() != 1 {
        return Err(TapError::Frames {
            what,
            frames: frames.len(),
        });
    }
    Ok(frames.swap_remove(0))
}

fn message_of(frames: Vec<Bytes>) -> Result<ZmqMessage, TapError> {
    let count = frames.len();
    ZmqMessage::try_from(frames).map_err(|_| TapError::Frames {
        what: "a message to forward",
        frames: count,
    })
}

fn routed_message(identity: &Bytes, mut frames: Vec<Bytes>) -> Result<ZmqMessage, TapError> {
    frames.insert(0, identity.clone());
    message_of(frames)
}

/// A tap forwards what it does not understand; a handshake status it
/// cannot read is worth a warning, not a refusal.
fn expect_status(bytes: &[u8], expected: StatusKind, name: &str) {
    match HandshakeStatus::decode(bytes) {
        Ok(status) if status.status == expected => {}
        Ok(status) => tracing::warn!(?status, "tap: expected {name} from the engine"),
        Err(error) => tracing::warn!(%error, "tap: expected {name} from the engine"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_message_gets_the_taps_addresses_and_keeps_the_rest() {
        let frontend = InitMessage {
            inputs: vec!["tcp://127.0.0.1:1".into()],
            outputs: vec!["tcp://127.0.0.1:2".into()],
            coordinator_input: Some("tcp://127.0.0.1:3".into()),
            coordinator_output: None,
            frontend_stats_publish_address: Some("tcp://127.0.0.1:4".into()),
            parallel_config: Value::Map(vec![(Value::from("data_parallel_size"), Value::from(1))]),
        };
        let mut value = frontend.to_value();
        // A key of a later release rides along.
        if let Value::Map(top) = &mut value {
            top.push((Value::from("later"), Value::from(true)));
        }
        let tap_inputs = vec!["tcp://127.0.0.1:11".to_string()];
        let tap_outputs = vec!["tcp://127.0.0.1:12".to_string()];
        let patched = patch_init(&wire::to_bytes(&value), &tap_inputs, &tap_outputs).unwrap();
        let decoded = InitMessage::decode(&patched).unwrap();
        assert_eq!(
            decoded,
            InitMessage {
                inputs: tap_inputs,
                outputs: tap_outputs,
                ..frontend
            }
        );
        let raw = wire::from_bytes("init", &patched).unwrap();
        assert!(raw.to_string().contains("later"), "{raw}");
        assert!(patch_init(b"\x90", &[], &[]).is_err(), "not a map");
    }

    #[test]
    fn data_sockets_bind_on_the_engine_handshake_host() {
        assert_eq!(data_host("tcp://10.1.2.3:29551"), "10.1.2.3");
        assert_eq!(data_host("tcp://*:29551"), "0.0.0.0");
        assert_eq!(data_host("ipc:///tmp/x"), "127.0.0.1");
    }
}
