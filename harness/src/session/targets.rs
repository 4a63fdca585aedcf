//! The targets of a run, started together and held until it ends, each
//! with the channel its engine takes scripts through.
//!
//! ```no_run
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use harness::session::targets::TargetSet;
//! use harness::targets::{TargetSpec, VllmOptions};
//!
//! let specs = [TargetSpec::Reference];
//! let set = TargetSet::start(&specs, &mock_engine::Corpus::default(), &VllmOptions::default())
//!     .await
//!     .unwrap();
//! assert_eq!(set.names, ["reference"]);
//! set.stop().await;
//! # });
//! ```

use mock_engine::Corpus;

use super::scripts::ScriptChannel;
use crate::targets::{Target, TargetSpec, VllmOptions};

/// Started targets, in the order they were named, with how each takes
/// scripts and the client every request goes through.
pub struct TargetSet {
    pub targets: Vec<Target>,
    /// `channels[i]` reaches the engine of `targets[i]`.
    pub channels: Vec<ScriptChannel>,
    /// `names[i]` is the name of `targets[i]` in reports.
    pub names: Vec<String>,
    /// No idle connections are kept: a server a case killed must not hand
    /// the next case a dead connection.
    pub client: reqwest::Client,
}

impl TargetSet {
    /// Starts every target of `specs` (a server is started lazily, for the
    /// first fixture that needs its options; see [`Target::endpoint`]), then
    /// finds each one's script channel.
    pub async fn start(
        specs: &[TargetSpec],
        corpus: &Corpus,
        vllm: &VllmOptions,
    ) -> anyhow::Result<Self> {
        let mut targets = Vec::new();
        for spec in specs {
            targets.push(Target::start(spec.clone(), corpus, vllm).await?);
        }
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?;
        let mut channels = Vec::new();
        for target in &targets {
            channels.push(ScriptChannel::of(target, &client).await);
        }
        Ok(Self {
            names: targets.iter().map(Target::name).collect(),
            targets,
            channels,
            client,
        })
    }

    /// Whether every target's engine takes scripts.
    pub fn all_scripted(&self) -> bool {
        self.channels
            .iter()
            .all(|c| !matches!(c, ScriptChannel::None))
    }

    /// Each target's name with how it takes scripts, for a summary.
    pub fn channel_labels(&self) -> Vec<(String, &'static str)> {
        self.names
            .iter()
            .cloned()
            .zip(self.channels.iter().map(ScriptChannel::label))
            .collect()
    }

    /// Stops every target, in order.
    pub async fn stop(self) {
        for target in self.targets {
            target.stop().await;
        }
    }
}
