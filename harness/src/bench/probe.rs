//! The mock engine core on its own: how fast it can emit tokens to a
//! frontend, and how closely it keeps to scripted delays.
//!
//! A bench result through a real frontend only means something if the engine
//! was not the limit. The probe starts the engine core in-process against a
//! minimal frontend made of the same ZeroMQ sockets vLLM binds (ROUTER for
//! the handshake and requests, PULL for outputs), sends ADD requests and
//! times the outputs, decoding each as a frontend would.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mock_engine::Engine;
use mock_engine::core::{CoreOptions, run_engine_core};
use mock_engine::wire::{
    EngineCoreOutputs, EngineCoreRequest, InitMessage, RequestType, SamplingParams, VllmVersion,
};
use serde::Serialize;
use zeromq::{PullSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use super::profile::{EngineProfile, RequestShape, ScriptedRequest, variants};
use super::stats::{Distribution, Summary, relative_error_pct};

/// Only a broken engine core takes this long to answer anything.
const WAIT: Duration = Duration::from_secs(30);

/// The engine core's output rate with nothing else in the way.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub requests: usize,
    pub tokens_per_request: u32,
    /// Distinct scripts the requests cycle through, as in the load.
    pub script_variants: usize,
    pub tokens: u64,
    pub output_messages: u64,
    pub elapsed_s: f64,
    pub tokens_per_s: f64,
}

/// Several [`throughput`] runs: two threads share two cores with the
/// frontend, so single runs vary by a fifth; the median is the figure.
#[derive(Debug, Clone, Serialize)]
pub struct Throughputs {
    pub runs: Vec<Throughput>,
    pub tokens_per_s: f64,
}

impl Throughputs {
    pub fn new(runs: Vec<Throughput>) -> Option<Self> {
        let mut rates: Vec<f64> = runs.iter().map(|r| r.tokens_per_s).collect();
        rates.sort_by(f64::total_cmp);
        let median = *rates.get(rates.len() / 2)?;
        Some(Self {
            runs,
            tokens_per_s: median,
        })
    }
}

/// Scripted against observed delays between consecutive outputs of a request.
#[derive(Debug, Clone, Serialize)]
pub struct Pacing {
    pub requests: usize,
    pub scripted_itl_ms: u64,
    /// Relative error, in hundredths of a percent (p50 of 250 = 2.5%).
    pub relative_error_centipct: Summary,
    /// Observed minus scripted, microseconds.
    pub error_us: Summary,
}

impl Pacing {
    pub fn p50_pct(&self) -> f64 {
        self.relative_error_centipct.p50_us as f64 / 100.0
    }

    pub fn p99_pct(&self) -> f64 {
        self.relative_error_centipct.p99_us as f64 / 100.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("fake frontend socket: {0}")]
    Zmq(#[from] zeromq::ZmqError),
    #[error("engine core: {0}")]
    Wire(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

async fn within<T>(
    what: &'static str,
    f: impl std::future::Future<Output = T>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(WAIT, f)
        .await
        .map_err(|_| ProbeError::Timeout(what))
}

/// A minimal frontend with an engine core attached.
struct FakeFrontend {
    input: RouterSocket,
    output: PullSocket,
    identity: Bytes,
    core: tokio::task::JoinHandle<Result<(), mock_engine::core::CoreError>>,
    _handshake: RouterSocket,
}

impl FakeFrontend {
    async fn start(engine: Engine) -> Result<Self, ProbeError> {
        let mut handshake = RouterSocket::new();
        let address = handshake.bind("tcp://127.0.0.1:0").await?;
        let mut input = RouterSocket::new();
        let input_address = input.bind("tcp://127.0.0.1:0").await?;
        let mut output = PullSocket::new();
        let output_address = output.bind("tcp://127.0.0.1:0").await?;
        let core = tokio::spawn(run_engine_core(
            CoreOptions::new(address.to_string()),
            engine,
        ));
        let hello = within("HELLO", handshake.recv()).await??.into_vec();
        let init = InitMessage {
            inputs: vec![input_address.to_string()],
            outputs: vec![output_address.to_string()],
            coordinator_input: None,
            coordinator_output: None,
            frontend_stats_publish_address: None,
            parallel_config: rmpv::Value::Map(vec![]),
        };
        let reply: ZmqMessage = vec![hello[0].clone(), Bytes::from(init.encode())]
            .try_into()
            .map_err(|_| ProbeError::Wire("empty init reply".into()))?;
        handshake.send(reply).await?;
        let ready = within("the ready response", input.recv())
            .await??
            .into_vec();
        let identity = ready[0].clone();
        within("READY", handshake.recv()).await??;
        Ok(Self {
            input,
            output,
            identity,
            core,
            _handshake: handshake,
        })
    }

    async fn add(&mut self, id: &str, scripted: &ScriptedRequest) -> Result<(), ProbeError> {
        let mut request = EngineCoreRequest::new(id, scripted.prompt.clone());
        request.sampling_params = Some(
            SamplingParams::from_pairs(&[("max_tokens", scripted.total_tokens.into())])
                .map_err(ProbeError::Wire)?,
        );
        let payload = request.encode(VllmVersion::V0_32_0.layout());
        let message: ZmqMessage = vec![
            self.identity.clone(),
            Bytes::from(vec![RequestType::Add.byte()]),
            Bytes::from(payload),
        ]
        .try_into()
        .map_err(|_| ProbeError::Wire("empty ADD".into()))?;
        self.input.send(message).await?;
        Ok(())
    }

    async fn next_raw(&mut self) -> Result<Vec<Bytes>, ProbeError> {
        Ok(within("an engine output", self.output.recv())
            .await??
            .into_vec())
    }

    async fn next(&mut self) -> Result<EngineCoreOutputs, ProbeError> {
        decode(&self.next_raw().await?)
    }
}

impl Drop for FakeFrontend {
    fn drop(&mut self) {
        self.core.abort();
    }
}

fn decode(frames: &[Bytes]) -> Result<EngineCoreOutputs, ProbeError> {
    let first = frames
        .first()
        .ok_or_else(|| ProbeError::Wire("an output message without frames".into()))?;
    EngineCoreOutputs::decode(VllmVersion::V0_32_0.layout(), first, &frames[1..])
        .map_err(|e| ProbeError::Wire(e.to_string()))
}

/// How many outputs an `EngineCoreOutputs` message carries, from its header:
/// `[engine_index, [output, ...], ...]`.
fn output_count(frames: &[Bytes]) -> Result<u64, ProbeError> {
    let bad = |e: &dyn std::fmt::Display| ProbeError::Wire(format!("an output message: {e}"));
    let mut rd: &[u8] = frames
        .first()
        .ok_or_else(|| ProbeError::Wire("an output message without frames".into()))?;
    rmp::decode::read_array_len(&mut rd).map_err(|e| bad(&e))?;
    let _engine_index: u64 = rmp::decode::read_int(&mut rd).map_err(|e| bad(&e))?;
    Ok(u64::from(
        rmp::decode::read_array_len(&mut rd).map_err(|e| bad(&e))?,
    ))
}

fn register(engine: &Engine, scripts: &[ScriptedRequest]) {
    for s in scripts {
        engine.register(s.prompt.clone(), s.script.clone());
    }
}

/// `requests` concurrent unpaced requests of `tokens` tokens each, cycling
/// through `script_variants` scripts, timed from the first ADD to the last
/// finished output.
pub async fn throughput(
    requests: usize,
    tokens: u32,
    tokens_per_step: u32,
    script_variants: usize,
) -> Result<Throughput, ProbeError> {
    let profile = EngineProfile {
        ttft_ms: 0,
        itl_ms: 0,
        itl_jitter_ms: 0,
        tokens_per_step,
        unpaced: true,
    };
    let shape = RequestShape {
        max_tokens: tokens,
        ..RequestShape::default()
    };
    let scripts = variants(
        &profile,
        &shape,
        script_variants.clamp(1, requests.max(1)),
        0,
    );
    let engine = Engine::default();
    register(&engine, &scripts);
    let mut frontend = FakeFrontend::start(engine).await?;
    let start = Instant::now();
    for i in 0..requests {
        frontend
            .add(&format!("probe-{i}"), &scripts[i % scripts.len()])
            .await?;
    }
    // One output per request per step, batched by the core into messages:
    // count outputs from each message's msgpack header rather than decode
    // them all, so the figure is the core's emission rate, not this
    // frontend's decoding. Every 64th message is decoded, to check it is
    // what was scripted.
    let steps: u64 = (0..requests)
        .map(|i| scripts[i % scripts.len()].offsets_us.len() as u64)
        .sum();
    let (mut messages, mut outputs) = (0u64, 0u64);
    while outputs < steps {
        let frames = frontend.next_raw().await?;
        messages += 1;
        outputs += output_count(&frames)?;
        if messages.is_multiple_of(64) {
            let outputs = decode(&frames)?;
            let tokens: usize = outputs.outputs.iter().map(|o| o.new_token_ids.len()).sum();
            if tokens == 0 {
                return Err(ProbeError::Wire(format!(
                    "output message {messages} carries no tokens"
                )));
            }
        }
    }
    let total = u64::from(tokens) * requests as u64;
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Throughput {
        requests,
        tokens_per_request: tokens,
        script_variants: scripts.len(),
        tokens: total,
        output_messages: messages,
        elapsed_s: elapsed,
        tokens_per_s: total as f64 / elapsed,
    })
}

/// `requests` concurrent requests of `steps` steps `itl_ms` apart: the gap
/// between consecutive outputs of a request against the scripted delay.
pub async fn pacing(requests: usize, steps: u32, itl_ms: u64) -> Result<Pacing, ProbeError> {
    let (scripts, engine) = pacing_scripts(requests, steps, itl_ms);
    let mut frontend = FakeFrontend::start(engine).await?;
    for (i, s) in scripts.iter().enumerate() {
        frontend.add(&format!("pace-{i}"), s).await?;
    }
    let mut last: HashMap<String, Instant> = HashMap::new();
    let mut gaps = GapErrors::new(itl_ms);
    let mut finished = 0;
    while finished < scripts.len() {
        let outputs = frontend.next().await?;
        let at = Instant::now();
        for o in outputs.outputs {
            finished += usize::from(o.finish_reason.is_some());
            if let Some(before) = last.insert(o.request_id.clone(), at) {
                gaps.push(at - before);
            }
        }
    }
    Ok(gaps.pacing(scripts.len()))
}

/// [`pacing`] of the engine alone, in-process (as the reference server
/// uses it): the timer's share of the error, without the ZeroMQ transport.
pub async fn pacing_in_process(requests: usize, steps: u32, itl_ms: u64) -> Pacing {
    use futures::StreamExt;
    let (scripts, engine) = pacing_scripts(requests, steps, itl_ms);
    let tasks: Vec<_> = scripts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let stream = engine.submit(mock_engine::EngineRequest::new(
                format!("pace-{i}"),
                s.prompt.clone(),
            ));
            tokio::spawn(async move {
                futures::pin_mut!(stream);
                let mut arrivals = Vec::new();
                while stream.next().await.is_some() {
                    arrivals.push(Instant::now());
                }
                arrivals
            })
        })
        .collect();
    let mut gaps = GapErrors::new(itl_ms);
    for task in tasks {
        let arrivals = task.await.unwrap_or_default();
        for pair in arrivals.windows(2) {
            gaps.push(pair[1] - pair[0]);
        }
    }
    gaps.pacing(scripts.len())
}

/// `requests` requests of `steps` one-token steps `itl_ms` apart, registered
/// on a fresh engine: the workload of both pacing probes.
///
/// The requests' first steps are spread over one delay, as requests reach an
/// engine at different times. With one shared phase, a single stall of the
/// machine (a few a second in a VM) would hit every request at once and
/// alone make up the p99.
fn pacing_scripts(requests: usize, steps: u32, itl_ms: u64) -> (Vec<ScriptedRequest>, Engine) {
    let profile = EngineProfile {
        ttft_ms: itl_ms,
        itl_ms,
        itl_jitter_ms: 0,
        tokens_per_step: 1,
        unpaced: false,
    };
    let shape = RequestShape {
        max_tokens: steps,
        ..RequestShape::default()
    };
    let mut scripts = variants(&profile, &shape, requests.max(1), 0);
    for (i, s) in scripts.iter_mut().enumerate() {
        let shift = i as u64 % itl_ms.max(1);
        if let Some(first) = s.script.steps.first_mut() {
            first.delay_ms += shift;
        }
        for offset in &mut s.offsets_us {
            *offset += shift as i64 * 1000;
        }
    }
    let engine = Engine::default();
    register(&engine, &scripts);
    (scripts, engine)
}

/// Observed gaps between consecutive outputs of a request, against the
/// scripted delay: absolute (µs) and relative (hundredths of a percent).
struct GapErrors {
    scripted_itl_ms: u64,
    relative: Distribution,
    absolute: Distribution,
}

impl GapErrors {
    fn new(scripted_itl_ms: u64) -> Self {
        Self {
            scripted_itl_ms,
            relative: Distribution::default(),
            absolute: Distribution::default(),
        }
    }

    fn push(&mut self, observed: Duration) {
        let scripted_us = self.scripted_itl_ms as i64 * 1000;
        let observed = observed.as_micros() as i64;
        self.absolute.push(observed - scripted_us);
        if let Some(pct) = relative_error_pct(observed, scripted_us) {
            self.relative.push((pct * 100.0).round() as i64);
        }
    }

    fn pacing(self, requests: usize) -> Pacing {
        Pacing {
            requests,
            scripted_itl_ms: self.scripted_itl_ms,
            relative_error_centipct: self.relative.summary(),
            error_us: self.absolute.summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn throughput_counts_every_scripted_token_through_the_core() {
        let t = throughput(12, 40, 1, 5).await.unwrap();
        assert_eq!(t.tokens, 12 * 40);
        assert_eq!(t.script_variants, 5);
        assert!(t.output_messages >= 40, "one message per step at least");
        assert!(t.tokens_per_s > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pacing_through_the_core_sees_every_gap() {
        let p = pacing(4, 6, 2).await.unwrap();
        assert_eq!(p.requests, 4);
        // 6 outputs a request, 5 gaps each.
        assert_eq!(p.relative_error_centipct.count, 4 * 5);
    }

    #[test]
    fn the_figure_of_several_runs_is_their_median() {
        let run = |tokens_per_s| Throughput {
            requests: 1,
            tokens_per_request: 1,
            script_variants: 1,
            tokens: 1,
            output_messages: 1,
            elapsed_s: 1.0,
            tokens_per_s,
        };
        let all = Throughputs::new(vec![run(3.0), run(1.0), run(9.0)]).unwrap();
        assert_eq!(all.tokens_per_s, 3.0);
        assert!(Throughputs::new(Vec::new()).is_none());
    }
}
