//! `genconform tap`: the recording tap on its own, between any frontend and
//! engine pair (on a GPU machine, say), writing one fixture per engine
//! request it sees.
//!
//! The tap sits below the HTTP layer, so it does not see the client's
//! request: each fixture's request is rebuilt from the engine request (the
//! prompt and the sampling parameters a generate request can carry), as a
//! streamed `/inference/v1/generate` call. The engine script is exactly what
//! the engine sent.
//!
//! ```text
//! vllm serve MODEL --data-parallel-size-local 0 --data-parallel-rpc-port 29550 ...   # frontend
//! genconform tap --frontend tcp://127.0.0.1:29550 --listen tcp://127.0.0.1:29551 --out recorded/
//! vllm serve MODEL --headless --data-parallel-rpc-port 29551 ...                      # engine
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use mock_engine::script::{Fixture, Recorded, RequestSpec, Script, ServerOptions};
use mock_engine::tap::{TapOptions, run_tap};
use mock_engine::wire::{EngineCoreRequest, VllmVersion};
use tokio::sync::mpsc;

use super::trace::{Trace, Traces};
use super::write_fixture;
use mock_engine::engine_view::msgpack_to_json;

#[derive(Debug, Args)]
pub struct TapArgs {
    /// The frontend's handshake address (its `--data-parallel-rpc-port`).
    #[arg(long)]
    pub frontend: String,
    /// Where the tap listens for the engine (give the engine this port as
    /// its `--data-parallel-rpc-port`).
    #[arg(long)]
    pub listen: String,
    /// One fixture per engine request goes here.
    #[arg(long)]
    pub out: PathBuf,
    /// The wire layout both sides speak.
    #[arg(long, default_value = crate::vllm::DEFAULT_VERSION)]
    pub vllm_version: String,
    /// How long to wait for the engine to connect and the handshake to end.
    #[arg(long, default_value_t = 600)]
    pub handshake_timeout_secs: u64,
}

/// The sampling parameters a generate request carries to the engine, and so
/// the ones a rebuilt request keeps.
const REQUEST_PARAMS: &[&str] = &[
    "max_tokens",
    "min_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "logprobs",
    "prompt_logprobs",
    "stop_token_ids",
    "ignore_eos",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
];

pub fn tap_command(args: TapArgs) -> ExitCode {
    let version: VllmVersion = match args.vllm_version.parse() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: --vllm-version: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("error: cannot create {}: {e}", args.out.display());
        return ExitCode::from(2);
    }
    let runtime = match crate::args::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let mut options = TapOptions::new(args.frontend.clone(), args.listen.clone());
        options.layout = version.layout();
        options.handshake_timeout = Duration::from_secs(args.handshake_timeout_secs);
        let (journal, mut events) = mpsc::unbounded_channel();
        let mut tap = tokio::spawn(run_tap(options, journal));
        eprintln!(
            "tap: waiting for the engine on {} (the frontend is at {}); Ctrl-C ends it",
            args.listen, args.frontend
        );
        let recorded = Recorded {
            vllm_version: args.vllm_version.clone(),
            frontend: format!("tap {} -> {}", args.listen, args.frontend),
            engine: "as connected".into(),
            model: "as served".into(),
        };
        let mut traces = Traces::default();
        let mut written = 0usize;
        let mut failed = 0usize;
        let ended = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => {
                        traces.push(event);
                        for trace in traces.take_finished() {
                            match write(&args, &recorded, &trace, written + failed) {
                                Ok(path) => {
                                    written += 1;
                                    eprintln!("tap: {} -> {}", trace.request.request_id, path.display());
                                }
                                Err(e) => {
                                    failed += 1;
                                    eprintln!("tap: {}: {e}", trace.request.request_id);
                                }
                            }
                        }
                    }
                    // The journal closes after the tap's last message.
                    None => break (&mut tap).await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())),
                },
                _ = tokio::signal::ctrl_c() => {
                    tap.abort();
                    break Ok(());
                }
            }
        };
        let open = traces.take_all().len();
        eprintln!(
            "tap: {written} fixtures written to {}, {failed} failed, {open} requests unfinished, {} messages did not decode",
            args.out.display(),
            traces.undecodable.len()
        );
        match ended {
            Ok(()) if failed == 0 => ExitCode::SUCCESS,
            Ok(()) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    })
}

fn write(
    args: &TapArgs,
    recorded: &Recorded,
    trace: &Trace,
    index: usize,
) -> anyhow::Result<PathBuf> {
    let fixture = Fixture {
        name: format!("tap_{index:04}"),
        description: format!(
            "engine request {} seen by genconform tap; the HTTP request is rebuilt from it",
            trace.request.request_id
        ),
        server: ServerOptions::default(),
        request: rebuilt_request(&trace.request),
        engine: Script {
            steps: trace.steps().map_err(anyhow::Error::msg)?,
            ..Script::default()
        },
        in_process_only: None,
        recorded: Some(recorded.clone()),
    };
    let path = args.out.join(format!("{}.json", fixture.name));
    write_fixture(&path, &fixture)?;
    Ok(path)
}

/// A streamed generate request that makes a frontend send `request` again.
pub fn rebuilt_request(request: &EngineCoreRequest) -> RequestSpec {
    let mut params = serde_json::Map::new();
    if let Some(sampling) = &request.sampling_params
        && let serde_json::Value::Object(raw) = msgpack_to_json(&sampling.raw)
    {
        for (key, value) in raw {
            if REQUEST_PARAMS.contains(&key.as_str()) && !value.is_null() {
                params.insert(key, value);
            }
        }
    }
    RequestSpec {
        method: "POST".into(),
        path: Some(mock_engine::script::GENERATE_PATH.into()),
        body: Some(serde_json::json!({
            "token_ids": request.prompt_token_ids.clone().unwrap_or_default(),
            "sampling_params": params,
            "stream": true,
        })),
        ..RequestSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use mock_engine::wire::SamplingParams;

    use super::*;

    #[test]
    fn a_rebuilt_request_keeps_the_prompt_and_request_params_only() {
        let mut request = EngineCoreRequest::new("r", vec![5, 6]);
        request.sampling_params = Some(
            SamplingParams::from_pairs(&[
                ("max_tokens", 7.into()),
                ("temperature", rmpv::Value::F64(0.5)),
                ("output_kind", 1.into()),
                ("seed", rmpv::Value::Nil),
            ])
            .unwrap(),
        );
        let spec = rebuilt_request(&request);
        let body = spec.body.unwrap();
        assert_eq!(body["token_ids"], serde_json::json!([5, 6]));
        assert_eq!(
            body["sampling_params"],
            serde_json::json!({"max_tokens": 7, "temperature": 0.5})
        );
        assert_eq!(body["stream"], true);
    }
}
