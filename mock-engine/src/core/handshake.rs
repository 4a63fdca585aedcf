//! Start-up: HELLO, init, connect, ready response, READY.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use zeromq::{DealerSocket, PushSocket, Socket, SocketOptions, SocketRecv, SocketSend, ZmqMessage};

use super::{CoreError, CoreOptions};
use crate::engine::Engine;
use crate::wire::{HandshakeStatus, InitMessage, ReadyResponse, StatusKind};

/// The sockets of a running engine core.
pub(crate) struct Sockets {
    pub inputs: Vec<DealerSocket>,
    pub outputs: Vec<PushSocket>,
    /// Kept open for the engine's life: closing it early could drop READY
    /// before it is flushed.
    pub _handshake: DealerSocket,
}

fn identity_options(opts: &CoreOptions) -> SocketOptions {
    let mut options = SocketOptions::default();
    let identity = opts.rank.to_le_bytes().to_vec();
    options.peer_identity(identity.try_into().expect("two bytes are a valid identity"));
    // The handshake deadline covers connecting; a second, shorter timer in
    // zeromq would only hide which stage was stuck.
    options.no_connect_timeout();
    options
}

pub(crate) async fn connect(opts: &CoreOptions, engine: &Engine) -> Result<Sockets, CoreError> {
    let deadline = Instant::now() + opts.handshake_timeout;
    let stage = Arc::new(Mutex::new("connecting to the handshake socket"));
    let steps = steps(opts, engine, stage.clone());
    match tokio::time::timeout_at(deadline, steps).await {
        Ok(result) => result,
        Err(_) => Err(CoreError::HandshakeTimeout {
            address: opts.handshake_address.clone(),
            timeout: opts.handshake_timeout,
            stage: *stage.lock().unwrap_or_else(|e| e.into_inner()),
        }),
    }
}

async fn steps(
    opts: &CoreOptions,
    engine: &Engine,
    stage: Arc<Mutex<&'static str>>,
) -> Result<Sockets, CoreError> {
    let at = |s: &'static str| *stage.lock().unwrap_or_else(|e| e.into_inner()) = s;
    let address = &opts.handshake_address;
    let mut handshake = DealerSocket::with_options(identity_options(opts));
    handshake
        .connect(address)
        .await
        .map_err(CoreError::zmq(format!("connecting to handshake {address}")))?;
    at("sending HELLO");
    handshake
        .send(HandshakeStatus::remote(StatusKind::Hello).encode().into())
        .await
        .map_err(CoreError::zmq("sending HELLO"))?;
    tracing::info!(%address, rank = opts.rank, "HELLO sent; waiting for the init message");
    at("waiting for the init message");
    let init = handshake
        .recv()
        .await
        .map_err(CoreError::zmq("receiving the init message"))?;
    let init = InitMessage::decode(&single_frame(init))?;
    tracing::info!(inputs = ?init.inputs, outputs = ?init.outputs, "init message received");

    at("connecting the input sockets");
    let ready = ReadyResponse::mock(
        engine.config().max_model_len,
        opts.rank,
        opts.layout.version,
        &opts.instance_id,
    )
    .encode();
    let mut inputs = Vec::new();
    for input in &init.inputs {
        let mut socket = DealerSocket::with_options(identity_options(opts));
        socket
            .connect(input)
            .await
            .map_err(CoreError::zmq(format!("connecting input {input}")))?;
        // The frontend's ROUTER learns our identity from this first message.
        socket
            .send(ready.clone().into())
            .await
            .map_err(CoreError::zmq(format!(
                "sending the ready response to {input}"
            )))?;
        inputs.push(socket);
    }
    at("connecting the output sockets");
    let mut outputs = Vec::new();
    for output in &init.outputs {
        let mut socket = PushSocket::new();
        socket
            .connect(output)
            .await
            .map_err(CoreError::zmq(format!("connecting output {output}")))?;
        outputs.push(socket);
    }
    at("sending READY");
    handshake
        .send(HandshakeStatus::remote(StatusKind::Ready).encode().into())
        .await
        .map_err(CoreError::zmq("sending READY"))?;
    tracing::info!(
        version = opts.layout.version,
        "READY sent; serving requests"
    );
    Ok(Sockets {
        inputs,
        outputs,
        _handshake: handshake,
    })
}

/// The handshake messages are single frames; extra frames would be a bug
/// on the other side, so they are dropped with a warning.
fn single_frame(message: ZmqMessage) -> Vec<u8> {
    let mut frames = message.into_vec();
    if frames.len() > 1 {
        tracing::warn!(
            frames = frames.len(),
            "multi-frame handshake message; using the first"
        );
    }
    frames.swap_remove(0).to_vec()
}
