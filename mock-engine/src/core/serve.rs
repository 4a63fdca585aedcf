//! The request loop: one reader per input socket, one writer for the output
//! sockets, one task per request (aborting a request aborts its task, which
//! drops the engine stream: the engine's own abort).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use rmpv::Value;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use zeromq::{DealerSocket, PushSocket, SocketRecv, SocketSend, ZmqMessage};

use super::convert::{to_engine_request, to_wire_output};
use super::handshake::Sockets;
use super::{CoreError, CoreOptions};
use crate::engine::{Engine, EngineEvent};
use crate::script::FinishReason;
use crate::wire::{
    AbortRequest, ENGINE_CORE_DEAD, EngineCoreOutput, EngineCoreOutputs, EngineCoreRequest, Layout,
    RequestType, UtilityCall, UtilityOutput,
};

/// What the writer task sends.
enum Outgoing {
    Outputs {
        client: u32,
        message: EngineCoreOutputs,
    },
    /// ENGINE_CORE_DEAD on every output socket.
    Dead,
}

/// Everything a request task or a handler needs to answer.
#[derive(Clone)]
struct Reply {
    out: mpsc::UnboundedSender<Outgoing>,
    engine_index: u32,
    clock: Instant,
}

impl Reply {
    /// vLLM stamps outputs with `time.monotonic()`; a remote engine's clock
    /// is its own, so seconds since this core started serve as well.
    fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    fn outputs(&self, client: u32, outputs: Vec<EngineCoreOutput>) {
        let message = EngineCoreOutputs::batch(self.engine_index, outputs, self.now());
        // A closed writer means the core is stopping; nothing left to tell.
        let _ = self.out.send(Outgoing::Outputs { client, message });
    }

    fn utility(&self, client: u32, output: UtilityOutput) {
        let message = EngineCoreOutputs::utility(self.engine_index, output, self.now());
        let _ = self.out.send(Outgoing::Outputs { client, message });
    }

    fn dead(&self) {
        let _ = self.out.send(Outgoing::Dead);
    }
}

type Running = Arc<Mutex<HashMap<String, AbortHandle>>>;

static SHORT_REQUEST: std::sync::Once = std::sync::Once::new();

pub(crate) async fn serve(
    sockets: Sockets,
    engine: Engine,
    opts: &CoreOptions,
) -> Result<(), CoreError> {
    let layout = opts.version.layout();
    let Sockets {
        inputs,
        outputs,
        _handshake,
    } = sockets;
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<CoreError>();
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Result<ZmqMessage, String>>();
    let writer = tokio::spawn(write_outputs(outputs, out_rx, layout));
    let readers: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, socket)| tokio::spawn(read_inputs(i, socket, in_tx.clone())))
        .collect();
    drop(in_tx);
    let reply = Reply {
        out: out_tx,
        engine_index: u32::from(opts.rank),
        clock: Instant::now(),
    };
    let running: Running = Arc::default();

    let result = loop {
        tokio::select! {
            fatal = fatal_rx.recv() => {
                if let Some(error) = fatal { break Err(error) }
            }
            message = in_rx.recv() => match message {
                Some(Ok(message)) => {
                    let handled = handle(message, layout, &engine, &reply, &running, &fatal_tx);
                    if let Err(error) = handled {
                        tracing::error!(%error, "cannot serve this frontend; sending ENGINE_CORE_DEAD");
                        reply.dead();
                        break Err(error);
                    }
                }
                Some(Err(reason)) => break Err(CoreError::FrontendGone(reason)),
                None => break Err(CoreError::FrontendGone("all input sockets closed".into())),
            },
        }
    };

    for handle in running.lock().unwrap_or_else(|e| e.into_inner()).values() {
        handle.abort();
    }
    for reader in readers {
        reader.abort();
    }
    // Let the writer drain (ENGINE_CORE_DEAD included) before the sockets close.
    drop(reply);
    drop(fatal_tx);
    let _ = writer.await;
    result
}

async fn read_inputs(
    index: usize,
    mut socket: DealerSocket,
    tx: mpsc::UnboundedSender<Result<ZmqMessage, String>>,
) {
    loop {
        let message = socket
            .recv()
            .await
            .map_err(|e| format!("input socket {index}: {e}"));
        let failed = message.is_err();
        if tx.send(message).is_err() || failed {
            return;
        }
    }
}

async fn write_outputs(
    mut sockets: Vec<PushSocket>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    layout: &'static Layout,
) {
    while let Some(outgoing) = rx.recv().await {
        match outgoing {
            Outgoing::Outputs { client, message } => {
                let index = client as usize;
                let socket_count = sockets.len();
                let Some(socket) = sockets.get_mut(index) else {
                    tracing::error!(
                        client,
                        socket_count,
                        "no output socket for this client index"
                    );
                    continue;
                };
                if let Err(error) = socket.send(message.encode(layout).into()).await {
                    tracing::error!(%error, client, "sending outputs failed");
                }
            }
            Outgoing::Dead => {
                for socket in &mut sockets {
                    if let Err(error) = socket.send(ENGINE_CORE_DEAD.to_vec().into()).await {
                        tracing::error!(%error, "sending ENGINE_CORE_DEAD failed");
                    }
                }
            }
        }
    }
}

/// One input message. An error here is fatal: the frontend speaks a
/// protocol we do not.
fn handle(
    message: ZmqMessage,
    layout: &'static Layout,
    engine: &Engine,
    reply: &Reply,
    running: &Running,
    fatal: &mpsc::UnboundedSender<CoreError>,
) -> Result<(), CoreError> {
    let frames = message.into_vec();
    let request_type = RequestType::from_frame(&frames[0])?;
    let payload = frames.get(1).map_or(&[][..], |f| &f[..]);
    match request_type {
        RequestType::Add => {
            let request = EngineCoreRequest::decode(layout, payload)?;
            if request.wire_len != layout.request.len() {
                // vLLM's encoder writes every field, so a shorter array is an
                // older frontend whose early fields happened to type-check.
                SHORT_REQUEST.call_once(|| {
                    tracing::warn!(
                        got = request.wire_len,
                        layout = layout.request.len(),
                        version = layout.version,
                        "EngineCoreRequest shorter than this layout: is the frontend an older vLLM?"
                    )
                });
            }
            add(request, engine, reply, running, fatal);
        }
        RequestType::Abort => {
            let AbortRequest(ids) = AbortRequest::decode(payload)?;
            let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
            for id in ids {
                match running.remove(&id) {
                    Some(task) => {
                        task.abort();
                        tracing::info!(request_id = %id, "aborted");
                    }
                    None => tracing::debug!(request_id = %id, "abort for a request not running"),
                }
            }
        }
        RequestType::Utility => {
            let call = UtilityCall::decode(payload)?;
            let result = match call.method.as_str() {
                "get_supported_tasks" => Value::Array(vec![Value::from("generate")]),
                _ => Value::Nil,
            };
            tracing::info!(method = %call.method, call_id = call.call_id, %result, "utility call");
            reply.utility(
                call.client_index,
                UtilityOutput::success(call.call_id, result),
            );
        }
        RequestType::StartDpWave => {
            tracing::debug!("START_DP_WAVE ignored: a single mock engine has no waves");
        }
    }
    Ok(())
}

fn add(
    request: EngineCoreRequest,
    engine: &Engine,
    reply: &Reply,
    running: &Running,
    fatal: &mpsc::UnboundedSender<CoreError>,
) {
    let engine_request = to_engine_request(&request);
    tracing::info!(
        request_id = %request.request_id,
        prompt = ?engine_request.prompt_token_ids,
        scripted = engine.script_for(&engine_request.prompt_token_ids).is_some(),
        fields = request.wire_len,
        "ADD"
    );
    let stream = engine.submit(engine_request);
    let (reply, running_map, fatal) = (reply.clone(), running.clone(), fatal.clone());
    let id = request.request_id.clone();
    let mut map = running.lock().unwrap_or_else(|e| e.into_inner());
    // Holding the lock until the handle is in the map keeps a fast request
    // from removing itself before it was inserted.
    let task = tokio::spawn(async move {
        let prompt_len = request.prompt_token_ids.as_ref().map_or(0, Vec::len);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                EngineEvent::Output(output) => {
                    match to_wire_output(&request.request_id, prompt_len, output) {
                        Ok(output) => reply.outputs(request.client_index, vec![output]),
                        Err(error) => {
                            tracing::error!(request_id = %request.request_id, %error,
                                "script output cannot go on the wire; finishing with error");
                            let mut failed = EngineCoreOutput::tokens(&request.request_id, vec![]);
                            failed.finish_reason = Some(FinishReason::Error);
                            reply.outputs(request.client_index, vec![failed]);
                            break;
                        }
                    }
                }
                EngineEvent::Failed(message) => {
                    // The script asked for this death: news, not a fault.
                    tracing::info!(request_id = %request.request_id, %message,
                        "script failed: sending ENGINE_CORE_DEAD");
                    reply.dead();
                    let _ = fatal.send(CoreError::ScriptedDeath(message));
                    break;
                }
            }
        }
        running_map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&request.request_id);
    });
    if let Some(previous) = map.insert(id, task.abort_handle()) {
        tracing::warn!("duplicate request id: the earlier request is aborted");
        previous.abort();
    }
}
