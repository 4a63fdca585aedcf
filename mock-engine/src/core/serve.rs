//! The request loop. Like vLLM's own engine core it is one loop that steps
//! every running request: it wakes when any request has output due, takes
//! every output that is due by then, and sends each client one
//! `EngineCoreOutputs` for the step. One reader task per input socket feeds
//! it; one writer task encodes and sends, so stepping and sending overlap.
//!
//! The queue to the writer is bounded: a frontend that reads slowly slows the
//! scripts down instead of growing the core's memory without limit.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::task::Poll;
use std::time::Instant;

use rmpv::Value;
use tokio::sync::mpsc;
use zeromq::{DealerSocket, PushSocket, SocketRecv, SocketSend, ZmqMessage};

use super::convert::to_engine_request;
use super::handshake::Sockets;
use super::running::{Due, DueEvent, Request, Running};
use super::{CoreError, CoreOptions};
use crate::engine::Engine;
use crate::wire::{
    AbortRequest, ENGINE_CORE_DEAD, EngineCoreOutput, EngineCoreOutputs, EngineCoreRequest, Layout,
    OutputsWriter, RequestType, UtilityCall, UtilityOutput,
};

/// Messages queued for the writer, at most.
const QUEUE: usize = 64;

static SHORT_REQUEST: std::sync::Once = std::sync::Once::new();

pub(crate) async fn serve(
    sockets: Sockets,
    engine: Engine,
    opts: &CoreOptions,
) -> Result<(), CoreError> {
    let layout = opts.layout;
    let Sockets {
        inputs,
        outputs,
        _handshake,
    } = sockets;
    let (out_tx, out_rx) = mpsc::channel(QUEUE);
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Result<ZmqMessage, String>>();
    let writer = tokio::spawn(write_outputs(outputs, out_rx));
    let readers: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, socket)| tokio::spawn(read_inputs(i, socket, in_tx.clone())))
        .collect();
    drop(in_tx);
    let outbox = Outbox {
        out: out_tx,
        layout,
        engine_index: u32::from(opts.rank),
        clock: Instant::now(),
    };
    let (deaths_tx, mut deaths) = mpsc::unbounded_channel();
    let shards = (0..opts.loops.max(1))
        .map(|_| Shard::spawn(Step::new(outbox.clone()), deaths_tx.clone()))
        .collect();
    drop(deaths_tx);
    let mut core = Core {
        engine,
        layout,
        shards,
        outbox,
    };

    let result = loop {
        tokio::select! {
            message = in_rx.recv() => match message {
                Some(Ok(message)) => {
                    if let Err(error) = core.handle(message).await {
                        tracing::error!(%error, "cannot serve this frontend; sending ENGINE_CORE_DEAD");
                        core.outbox.dead().await;
                        break Err(error);
                    }
                }
                Some(Err(reason)) => break Err(CoreError::FrontendGone(reason)),
                None => break Err(CoreError::FrontendGone("all input sockets closed".into())),
            },
            Some(message) = deaths.recv() => break Err(CoreError::ScriptedDeath(message)),
        }
    };

    // Dropping the streams (with the shards) is the engine's abort for
    // whatever still runs.
    for shard in &core.shards {
        shard.task.abort();
    }
    for shard in std::mem::take(&mut core.shards) {
        let _ = shard.task.await;
    }
    for reader in readers {
        reader.abort();
    }
    // Let the writer drain (ENGINE_CORE_DEAD included) before the sockets close.
    drop(core);
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
    /// An encoded `EngineCoreOutputs`.
    Message { client: u32, bytes: Vec<u8> },
    /// ENGINE_CORE_DEAD on every output socket.
    Dead,
}

async fn write_outputs(mut sockets: Vec<PushSocket>, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(outgoing) = rx.recv().await {
        match outgoing {
            Outgoing::Message { client, bytes } => {
                let socket_count = sockets.len();
                let Some(socket) = sockets.get_mut(client as usize) else {
                    tracing::error!(
                        client,
                        socket_count,
                        "no output socket for this client index"
                    );
                    continue;
                };
                if let Err(error) = socket.send(bytes.into()).await {
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

/// The input loop's state: it answers utility calls itself and hands each
/// request to the shard its id hashes to.
struct Core {
    engine: Engine,
    layout: &'static Layout,
    shards: Vec<Shard>,
    /// For what the input loop answers itself.
    outbox: Outbox,
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
                let request = EngineCoreRequest::decode_with_frames(
                    self.layout,
                    payload,
                    frames.get(1..).unwrap_or(&[]),
                )?;
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
                    self.shard(&id).send(Command::Abort(id));
                }
            }
            RequestType::Utility => {
                let call = UtilityCall::decode(payload)?;
                let result = match call.method.as_str() {
                    "get_supported_tasks" => Value::Array(vec![Value::from("generate")]),
                    _ => Value::Nil,
                };
                tracing::info!(method = %call.method, call_id = call.call_id, %result, "utility call");
                self.outbox
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
        let shard = self.shard(&request.request_id);
        shard.send(Command::Add(Box::new(Request {
            request_id: request.request_id,
            client: request.client_index,
            prompt_len: request.prompt_token_ids.as_ref().map_or(0, Vec::len),
            events,
        })));
    }

    /// The same id always goes to the same shard, so an ABORT or a duplicate
    /// ADD finds its request: the hasher is unkeyed.
    fn shard(&self, request_id: &str) -> &Shard {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(request_id);
        &self.shards[(hash % self.shards.len() as u64) as usize]
    }
}

/// A loop of its own over a share of the requests. vLLM's engine steps all
/// requests on one thread; the mock steps them on as many loops as the
/// machine has cores, so that it keeps ahead of any frontend it feeds.
struct Shard {
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

enum Command {
    /// Boxed: a request is large and aborts are small.
    Add(Box<Request>),
    Abort(String),
}

impl Shard {
    fn spawn(step: Step, deaths: mpsc::UnboundedSender<String>) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_shard(rx, step, deaths));
        Self { commands, task }
    }

    fn send(&self, command: Command) {
        // A shard stops only with the core.
        let _ = self.commands.send(command);
    }
}

async fn run_shard(
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut step: Step,
    deaths: mpsc::UnboundedSender<String>,
) {
    let mut running = Running::default();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Add(request)) => running.add(*request),
                Some(Command::Abort(id)) => {
                    if running.abort(&id) {
                        tracing::info!(request_id = %id, "aborted");
                    } else {
                        tracing::debug!(request_id = %id, "abort for a request not running");
                    }
                }
                None => return,
            },
            () = std::future::poll_fn(|cx| running.poll_ready(cx)) => {
                if let Some(message) = step_once(&mut running, &mut step).await {
                    let _ = deaths.send(message);
                    return;
                }
            }
        }
    }
}

/// One engine step: whatever is due now, as one message per client. A
/// script's death ends it: what came before goes out, then
/// ENGINE_CORE_DEAD, and the death's message is returned.
async fn step_once(running: &mut Running, step: &mut Step) -> Option<String> {
    let mut death = None;
    // A step polls each ready request once, which is all the fairness the
    // requests need; tokio's per-task budget would cut a step of hundreds of
    // requests into many small messages.
    tokio::task::coop::unconstrained(std::future::poll_fn(|_| {
        running.step(|Due { client, event }| match event {
            // Nothing after a death goes out.
            DueEvent::Output(output) if death.is_none() => step.push(client, &output),
            DueEvent::Output(_) => {}
            DueEvent::Failed {
                request_id,
                message,
            } => {
                death.get_or_insert((request_id, message));
            }
        });
        Poll::Ready(())
    }))
    .await;
    step.flush().await;
    if let Some((request_id, message)) = death {
        // The script asked for this death: news, not a fault.
        tracing::info!(%request_id, %message, "script failed: sending ENGINE_CORE_DEAD");
        step.outbox.dead().await;
        return Some(message);
    }
    // Let the writer send this step while the next one is gathered: woken by
    // this task, it waits in this thread's queue, where no other thread can
    // steal it, until this task yields.
    tokio::task::yield_now().await;
    None
}

/// Where the engine's answers go: the writer's queue, with what every
/// `EngineCoreOutputs` is stamped with.
#[derive(Clone)]
struct Outbox {
    out: mpsc::Sender<Outgoing>,
    layout: &'static Layout,
    engine_index: u32,
    clock: Instant,
}

impl Outbox {
    /// vLLM stamps outputs with `time.monotonic()`; a remote engine's clock
    /// is its own, so seconds since this core started serve as well.
    fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    async fn send(&self, client: u32, bytes: Vec<u8>) {
        // A closed writer means the core is stopping; nothing left to tell.
        let _ = self.out.send(Outgoing::Message { client, bytes }).await;
    }

    /// A utility answer travels alone: the Rust frontend rejects a message
    /// that mixes it with request outputs.
    async fn utility(&self, client: u32, output: UtilityOutput) {
        let message = EngineCoreOutputs::utility(self.engine_index, output, self.now());
        self.send(client, message.encode(self.layout)).await;
    }

    async fn dead(&self) {
        let _ = self.out.send(Outgoing::Dead).await;
    }
}

/// The step being gathered: per client its next message, encoded as the
/// outputs come (so each output is freed where it was made, not by the
/// writer's thread).
struct Step {
    outbox: Outbox,
    batches: Vec<(u32, OutputsWriter)>,
}

impl Step {
    fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            batches: Vec::new(),
        }
    }

    /// A step polls each request once, so a message never carries two
    /// outputs of one request (vLLM's engine never sends that either).
    fn push(&mut self, client: u32, output: &EngineCoreOutput) {
        match self.batches.iter_mut().find(|(c, _)| *c == client) {
            Some((_, batch)) => batch.push(output),
            None => {
                let mut batch = OutputsWriter::new(self.outbox.layout);
                batch.push(output);
                self.batches.push((client, batch));
            }
        }
    }

    async fn flush(&mut self) {
        let now = self.outbox.now();
        for (client, batch) in &mut self.batches {
            if !batch.is_empty() {
                let bytes = batch.finish(self.outbox.engine_index, now);
                self.outbox.send(*client, bytes).await;
            }
        }
    }
}
