//! The request loop. Like vLLM's own engine core it is one loop that steps
//! every running request: it wakes when any request has output due, takes
//! every output that is due by then, and sends each client one
//! `EngineCoreOutputs` for the step. One reader task per input socket feeds
//! it; one writer task encodes and sends, so stepping and sending overlap.
//!
//! The queue to the writer is bounded: a frontend that reads slowly slows the
//! scripts down instead of growing the core's memory without limit.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use foldhash::fast::RandomState;
use futures::stream::{AbortHandle, Abortable, SelectAll};
use futures::{FutureExt, Stream, StreamExt};
use rmpv::Value;
use tokio::sync::mpsc;
use zeromq::{DealerSocket, PushSocket, SocketRecv, SocketSend, ZmqMessage};

use super::convert::{to_engine_request, to_wire_output};
use super::handshake::Sockets;
use super::{CoreError, CoreOptions};
use crate::engine::{Engine, EngineEvent, EngineStream};
use crate::script::FinishReason;
use crate::wire::{
    AbortRequest, ENGINE_CORE_DEAD, EngineCoreOutput, EngineCoreOutputs, EngineCoreRequest, Layout,
    RequestType, UtilityCall, UtilityOutput,
};

/// Messages queued for the writer, at most.
const QUEUE: usize = 64;

/// Outputs one step takes at most, so a flood of unpaced requests still
/// sends a message now and then instead of gathering without end.
const STEP_OUTPUTS: usize = 4096;

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
    let (out_tx, out_rx) = mpsc::channel(QUEUE);
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Result<ZmqMessage, String>>();
    let writer = tokio::spawn(write_outputs(outputs, out_rx, layout));
    let readers: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, socket)| tokio::spawn(read_inputs(i, socket, in_tx.clone())))
        .collect();
    drop(in_tx);
    let mut core = Core {
        engine,
        layout,
        running: Running::default(),
        step: Step::new(u32::from(opts.rank), out_tx),
    };

    let result = loop {
        tokio::select! {
            message = in_rx.recv() => match message {
                Some(Ok(message)) => {
                    if let Err(error) = core.handle(message).await {
                        tracing::error!(%error, "cannot serve this frontend; sending ENGINE_CORE_DEAD");
                        core.step.dead().await;
                        break Err(error);
                    }
                }
                Some(Err(reason)) => break Err(CoreError::FrontendGone(reason)),
                None => break Err(CoreError::FrontendGone("all input sockets closed".into())),
            },
            Some(first) = core.running.streams.next(), if !core.running.streams.is_empty() => {
                if let Err(error) = core.step(first).await {
                    break Err(error);
                }
            }
        }
    };

    // Dropping the streams is the engine's abort for whatever still runs.
    drop(core.running);
    for reader in readers {
        reader.abort();
    }
    // Let the writer drain (ENGINE_CORE_DEAD included) before the sockets close.
    drop(core.step);
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

/// What the writer task sends.
enum Outgoing {
    Message {
        client: u32,
        message: EngineCoreOutputs,
    },
    /// ENGINE_CORE_DEAD on every output socket.
    Dead,
}

async fn write_outputs(
    mut sockets: Vec<PushSocket>,
    mut rx: mpsc::Receiver<Outgoing>,
    layout: &'static Layout,
) {
    while let Some(outgoing) = rx.recv().await {
        match outgoing {
            Outgoing::Message { client, message } => {
                let socket_count = sockets.len();
                let Some(socket) = sockets.get_mut(client as usize) else {
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

/// The loop's state between wake-ups.
struct Core {
    engine: Engine,
    layout: &'static Layout,
    running: Running,
    step: Step,
}

impl Core {
    /// One input message. An error here is fatal: the frontend speaks a
    /// protocol we do not.
    async fn handle(&mut self, message: ZmqMessage) -> Result<(), CoreError> {
        let frames = message.into_vec();
        let request_type = RequestType::from_frame(&frames[0])?;
        let payload = frames.get(1).map_or(&[][..], |f| &f[..]);
        match request_type {
            RequestType::Add => {
                let request = EngineCoreRequest::decode(self.layout, payload)?;
                if request.wire_len != self.layout.request.len() {
                    // vLLM's encoder writes every field, so a shorter array is an
                    // older frontend whose early fields happened to type-check.
                    SHORT_REQUEST.call_once(|| {
                        tracing::warn!(
                            got = request.wire_len,
                            layout = self.layout.request.len(),
                            version = self.layout.version,
                            "EngineCoreRequest shorter than this layout: is the frontend an older vLLM?"
                        )
                    });
                }
                self.add(request);
            }
            RequestType::Abort => {
                let AbortRequest(ids) = AbortRequest::decode(payload)?;
                for id in ids {
                    if self.running.abort(&id) {
                        tracing::info!(request_id = %id, "aborted");
                    } else {
                        tracing::debug!(request_id = %id, "abort for a request not running");
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
                self.step
                    .utility(
                        call.client_index,
                        UtilityOutput::success(call.call_id, result),
                    )
                    .await;
            }
            RequestType::StartDpWave => {
                tracing::debug!("START_DP_WAVE ignored: a single mock engine has no waves");
            }
        }
        Ok(())
    }

    fn add(&mut self, request: EngineCoreRequest) {
        let engine_request = to_engine_request(&request);
        tracing::info!(
            request_id = %request.request_id,
            prompt = ?engine_request.prompt_token_ids,
            scripted = self.engine.script_for(&engine_request.prompt_token_ids).is_some(),
            fields = request.wire_len,
            "ADD"
        );
        let events = self.engine.submit(engine_request);
        self.running.add(RequestStream {
            request_id: request.request_id.clone(),
            serial: 0,
            client: request.client_index,
            prompt_len: request.prompt_token_ids.as_ref().map_or(0, Vec::len),
            events,
            ended: false,
        });
    }

    /// Everything due now, from `first` on, as one message per client.
    async fn step(&mut self, first: Due) -> Result<(), CoreError> {
        let mut due = Some(first);
        let mut taken = 0;
        while let Some(Due {
            serial,
            client,
            event,
        }) = due
        {
            match event {
                DueEvent::Output(output) => {
                    if output.finish_reason.is_some() {
                        self.running.finished(&output.request_id);
                    }
                    self.step.push(client, serial, output).await;
                }
                DueEvent::Failed {
                    request_id,
                    message,
                } => {
                    // The script asked for this death: news, not a fault.
                    tracing::info!(%request_id, %message, "script failed: sending ENGINE_CORE_DEAD");
                    self.step.flush().await;
                    self.step.dead().await;
                    return Err(CoreError::ScriptedDeath(message));
                }
            }
            taken += 1;
            due = if taken < STEP_OUTPUTS {
                self.running.streams.next().now_or_never().flatten()
            } else {
                None
            };
        }
        self.step.flush().await;
        Ok(())
    }
}

/// One request's output that is due, or the script's death.
struct Due {
    /// Tells requests apart without hashing their ids.
    serial: u64,
    client: u32,
    event: DueEvent,
}

enum DueEvent {
    Output(EngineCoreOutput),
    Failed { request_id: String, message: String },
}

/// A running request: the engine's stream, as wire outputs for one client.
struct RequestStream {
    request_id: String,
    serial: u64,
    client: u32,
    prompt_len: usize,
    events: EngineStream,
    ended: bool,
}

impl Stream for RequestStream {
    type Item = Due;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Due>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Some(event) = std::task::ready!(self.events.poll_next_unpin(cx)) else {
            return Poll::Ready(None);
        };
        let event = match event {
            EngineEvent::Output(output) => {
                match to_wire_output(&self.request_id, self.prompt_len, output) {
                    Ok(output) => DueEvent::Output(output),
                    Err(error) => {
                        tracing::error!(request_id = %self.request_id, %error,
                            "script output cannot go on the wire; finishing with error");
                        self.ended = true;
                        let mut failed = EngineCoreOutput::tokens(&self.request_id, vec![]);
                        failed.finish_reason = Some(FinishReason::Error);
                        DueEvent::Output(failed)
                    }
                }
            }
            EngineEvent::Failed(message) => DueEvent::Failed {
                request_id: self.request_id.clone(),
                message,
            },
        };
        Poll::Ready(Some(Due {
            serial: self.serial,
            client: self.client,
            event,
        }))
    }
}

/// Every running request, polled only when its output may be due.
#[derive(Default)]
struct Running {
    /// Boxed: `SelectAll` moves a stream out and back in for every item.
    streams: SelectAll<Pin<Box<Abortable<RequestStream>>>>,
    aborts: HashMap<String, AbortHandle>,
    serials: u64,
}

impl Running {
    fn add(&mut self, mut request: RequestStream) {
        self.serials += 1;
        request.serial = self.serials;
        let (handle, registration) = AbortHandle::new_pair();
        if let Some(previous) = self.aborts.insert(request.request_id.clone(), handle) {
            tracing::warn!("duplicate request id: the earlier request is aborted");
            previous.abort();
        }
        self.streams
            .push(Box::pin(Abortable::new(request, registration)));
    }

    /// The stream ends (and the engine sees the abort) at its next poll,
    /// which the abort itself wakes.
    fn abort(&mut self, request_id: &str) -> bool {
        self.aborts.remove(request_id).is_some_and(|h| {
            h.abort();
            true
        })
    }

    fn finished(&mut self, request_id: &str) {
        self.aborts.remove(request_id);
    }
}

/// The step being gathered: per client the outputs for its next message.
struct Step {
    out: mpsc::Sender<Outgoing>,
    engine_index: u32,
    clock: Instant,
    batches: Vec<Batch>,
}

/// vLLM never puts two outputs of one request in a message, so a second
/// one starts the next message.
#[derive(Default)]
struct Batch {
    client: u32,
    outputs: Vec<EngineCoreOutput>,
    requests: HashSet<u64, RandomState>,
}

impl Step {
    fn new(engine_index: u32, out: mpsc::Sender<Outgoing>) -> Self {
        Self {
            out,
            engine_index,
            clock: Instant::now(),
            batches: Vec::new(),
        }
    }

    /// vLLM stamps outputs with `time.monotonic()`; a remote engine's clock
    /// is its own, so seconds since this core started serve as well.
    fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    async fn push(&mut self, client: u32, serial: u64, output: EngineCoreOutput) {
        let index = match self.batches.iter().position(|b| b.client == client) {
            Some(index) => index,
            None => {
                self.batches.push(Batch {
                    client,
                    ..Batch::default()
                });
                self.batches.len() - 1
            }
        };
        if !self.batches[index].requests.insert(serial) {
            let outputs = self.batches[index].take();
            self.send(client, outputs).await;
            self.batches[index].requests.insert(serial);
        }
        self.batches[index].outputs.push(output);
    }

    async fn flush(&mut self) {
        for index in 0..self.batches.len() {
            let client = self.batches[index].client;
            let outputs = self.batches[index].take();
            if !outputs.is_empty() {
                self.send(client, outputs).await;
            }
        }
    }

    async fn send(&mut self, client: u32, outputs: Vec<EngineCoreOutput>) {
        let message = EngineCoreOutputs::batch(self.engine_index, outputs, self.now());
        // A closed writer means the core is stopping; nothing left to tell.
        let _ = self.out.send(Outgoing::Message { client, message }).await;
    }

    /// A utility answer travels alone: the Rust frontend rejects a message
    /// that mixes it with request outputs.
    async fn utility(&mut self, client: u32, output: UtilityOutput) {
        let message = EngineCoreOutputs::utility(self.engine_index, output, self.now());
        let _ = self.out.send(Outgoing::Message { client, message }).await;
    }

    async fn dead(&mut self) {
        let _ = self.out.send(Outgoing::Dead).await;
    }
}

impl Batch {
    fn take(&mut self) -> Vec<EngineCoreOutput> {
        self.requests.clear();
        std::mem::take(&mut self.outputs)
    }
}
