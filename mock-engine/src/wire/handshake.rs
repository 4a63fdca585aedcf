//! The start-up messages (`v1/engine/core.py` `startup_handshake`,
//! `v1/engine/utils.py` `EngineHandshakeMetadata`, `EngineCoreReadyResponse`).

use rmpv::Value;

use super::error::{Brief, WireError};
use super::positional::{lookup, map};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Hello,
    Ready,
}

/// `{"status": "HELLO"|"READY", "local": .., "headless": ..}` on the handshake socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeStatus {
    pub status: StatusKind,
    /// A remote engine says `false`, or the Python frontend refuses it.
    pub local: bool,
    /// A remote engine says `true`, or the Python frontend refuses it.
    pub headless: bool,
}

impl HandshakeStatus {
    pub fn remote(status: StatusKind) -> Self {
        Self {
            status,
            local: false,
            headless: true,
        }
    }

    pub fn to_value(&self) -> Value {
        let status = match self.status {
            StatusKind::Hello => "HELLO",
            StatusKind::Ready => "READY",
        };
        map([
            ("status", Value::from(status)),
            ("local", Value::Boolean(self.local)),
            ("headless", Value::Boolean(self.headless)),
        ])
    }

    pub fn encode(&self) -> Vec<u8> {
        super::to_bytes(&self.to_value())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const M: &str = "handshake status";
        let value = super::from_bytes(M, bytes)?;
        let bad = || WireError::Shape {
            message: M,
            expected: r#"{"status": "HELLO"|"READY", "local": bool, "headless": bool}"#,
            got: Brief(&value).to_string(),
        };
        let status = match lookup(&value, "status").and_then(Value::as_str) {
            Some("HELLO") => StatusKind::Hello,
            Some("READY") => StatusKind::Ready,
            _ => return Err(bad()),
        };
        Ok(Self {
            status,
            local: lookup(&value, "local")
                .and_then(Value::as_bool)
                .ok_or_else(bad)?,
            headless: lookup(&value, "headless")
                .and_then(Value::as_bool)
                .ok_or_else(bad)?,
        })
    }
}

/// What the frontend answers HELLO with: where to connect.
#[derive(Debug, Clone, PartialEq)]
pub struct InitMessage {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub coordinator_input: Option<String>,
    pub coordinator_output: Option<String>,
    pub frontend_stats_publish_address: Option<String>,
    /// Passed through untouched: a mock engine has no parallelism to configure.
    pub parallel_config: Value,
}

impl InitMessage {
    pub fn to_value(&self) -> Value {
        let strings =
            |v: &[String]| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect());
        let opt = |s: &Option<String>| s.as_deref().map_or(Value::Nil, Value::from);
        map([
            (
                "addresses",
                map([
                    ("inputs", strings(&self.inputs)),
                    ("outputs", strings(&self.outputs)),
                    ("coordinator_input", opt(&self.coordinator_input)),
                    ("coordinator_output", opt(&self.coordinator_output)),
                    (
                        "frontend_stats_publish_address",
                        opt(&self.frontend_stats_publish_address),
                    ),
                ]),
            ),
            ("parallel_config", self.parallel_config.clone()),
        ])
    }

    pub fn encode(&self) -> Vec<u8> {
        super::to_bytes(&self.to_value())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const M: &str = "init message";
        let value = super::from_bytes(M, bytes)?;
        let bad = |expected| WireError::Shape {
            message: M,
            expected,
            got: Brief(&value).to_string(),
        };
        let addresses = lookup(&value, "addresses").ok_or_else(|| bad("a map with `addresses`"))?;
        let list = |key| {
            lookup(addresses, key)
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect())
                .ok_or_else(|| bad("`addresses.inputs` and `addresses.outputs` as string lists"))
        };
        let opt = |key| {
            lookup(addresses, key)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let inputs: Vec<String> = list("inputs")?;
        let outputs: Vec<String> = list("outputs")?;
        if inputs.is_empty() || outputs.is_empty() {
            return Err(bad("at least one input and one output address"));
        }
        Ok(Self {
            inputs,
            outputs,
            coordinator_input: opt("coordinator_input"),
            coordinator_output: opt("coordinator_output"),
            frontend_stats_publish_address: opt("frontend_stats_publish_address"),
            parallel_config: lookup(&value, "parallel_config")
                .cloned()
                .unwrap_or(Value::Nil),
        })
    }
}

/// `EngineCoreReadyResponse`: the first message on each input socket. A
/// dataclass, so a map with every field (the Rust frontend requires all
/// fields without a default; the Python one fails without `instance_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyResponse {
    pub max_model_len: u32,
    pub num_gpu_blocks: u32,
    pub block_size: u32,
    pub dp_stats_address: Option<String>,
    pub dtype: String,
    pub vllm_version: String,
    pub world_size: u32,
    pub data_parallel_size: u32,
    pub tensor_parallel_size: u32,
    pub pipeline_parallel_size: u32,
    pub decode_context_parallel_size: u32,
    pub data_parallel_rank: u32,
    pub max_num_seqs: u32,
    pub max_num_batched_tokens: u32,
    pub instance_id: String,
    pub supports_lora: bool,
    pub max_loras: u32,
    pub enable_sleep_mode: bool,
    pub supports_draft_weight_updates: bool,
}

impl ReadyResponse {
    /// A single-GPU-shaped engine with nothing optional switched on.
    pub fn mock(max_model_len: u32, rank: u16, vllm_version: &str, instance_id: &str) -> Self {
        Self {
            max_model_len,
            num_gpu_blocks: 1024,
            block_size: 16,
            dp_stats_address: None,
            dtype: "float32".into(),
            vllm_version: vllm_version.into(),
            world_size: 1,
            data_parallel_size: 1,
            tensor_parallel_size: 1,
            pipeline_parallel_size: 1,
            decode_context_parallel_size: 1,
            data_parallel_rank: u32::from(rank),
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            instance_id: instance_id.into(),
            supports_lora: false,
            max_loras: 0,
            enable_sleep_mode: false,
            supports_draft_weight_updates: false,
        }
    }

    /// Keys in the dataclass's declaration order, as msgspec writes them.
    pub fn to_value(&self) -> Value {
        let n = |x: u32| Value::from(x);
        map([
            ("max_model_len", n(self.max_model_len)),
            ("num_gpu_blocks", n(self.num_gpu_blocks)),
            ("block_size", n(self.block_size)),
            (
                "dp_stats_address",
                self.dp_stats_address
                    .as_deref()
                    .map_or(Value::Nil, Value::from),
            ),
            ("dtype", Value::from(self.dtype.as_str())),
            ("vllm_version", Value::from(self.vllm_version.as_str())),
            ("world_size", n(self.world_size)),
            ("data_parallel_size", n(self.data_parallel_size)),
            ("tensor_parallel_size", n(self.tensor_parallel_size)),
            ("pipeline_parallel_size", n(self.pipeline_parallel_size)),
            (
                "decode_context_parallel_size",
                n(self.decode_context_parallel_size),
            ),
            ("data_parallel_rank", n(self.data_parallel_rank)),
            ("max_num_seqs", n(self.max_num_seqs)),
            ("max_num_batched_tokens", n(self.max_num_batched_tokens)),
            ("instance_id", Value::from(self.instance_id.as_str())),
            ("supports_lora", Value::Boolean(self.supports_lora)),
            ("max_loras", n(self.max_loras)),
            ("mamba_block_size", Value::Nil),
            ("kv_cache_size_tokens", Value::Nil),
            ("kv_cache_max_concurrency", Value::Nil),
            ("kv_events_config", Value::Nil),
            ("weight_transfer_backend", Value::Nil),
            ("enable_sleep_mode", Value::Boolean(self.enable_sleep_mode)),
            (
                "supports_draft_weight_updates",
                Value::Boolean(self.supports_draft_weight_updates),
            ),
            ("effective_attention_block_size", Value::Nil),
        ])
    }

    pub fn encode(&self) -> Vec<u8> {
        super::to_bytes(&self.to_value())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const M: &str = "ready response";
        let value = super::from_bytes(M, bytes)?;
        let missing = |field| WireError::Missing { message: M, field };
        let num = |key: &'static str| {
            lookup(&value, key)
                .and_then(Value::as_u64)
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| missing(key))
        };
        let text = |key: &'static str| {
            lookup(&value, key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| missing(key))
        };
        let flag = |key: &'static str| lookup(&value, key).and_then(Value::as_bool);
        Ok(Self {
            max_model_len: num("max_model_len")?,
            num_gpu_blocks: num("num_gpu_blocks")?,
            block_size: num("block_size")?,
            dp_stats_address: lookup(&value, "dp_stats_address")
                .and_then(Value::as_str)
                .map(str::to_string),
            dtype: text("dtype")?,
            vllm_version: text("vllm_version")?,
            world_size: num("world_size")?,
            data_parallel_size: num("data_parallel_size")?,
            tensor_parallel_size: num("tensor_parallel_size")?,
            pipeline_parallel_size: num("pipeline_parallel_size")?,
            decode_context_parallel_size: num("decode_context_parallel_size")?,
            data_parallel_rank: num("data_parallel_rank")?,
            max_num_seqs: num("max_num_seqs")?,
            max_num_batched_tokens: num("max_num_batched_tokens")?,
            instance_id: text("instance_id")?,
            supports_lora: flag("supports_lora").ok_or_else(|| missing("supports_lora"))?,
            max_loras: num("max_loras")?,
            enable_sleep_mode: flag("enable_sleep_mode").unwrap_or(false),
            supports_draft_weight_updates: flag("supports_draft_weight_updates").unwrap_or(false),
        })
    }
}
