//! The model directory every vLLM process of a run loads: the frontends read
//! its tokenizer and config, the real CPU engine core also its weights.
//!
//! One directory serves the mock engine and the real one, so both speak the
//! same vocabulary under the same served name. The weights are random but
//! seeded: the same bytes on every machine, so a greedy request gets the same
//! tokens wherever it is recorded.
//!
//! ```no_run
//! let dir = std::path::Path::new(".genconform/model");
//! model::write_model_dir(dir).unwrap();
//! assert!(dir.join("model.safetensors").is_file());
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Normal};
use safetensors::tensor::{Dtype, TensorView};

#[cfg(test)]
use crate::vocabulary::VOCAB;
use crate::vocabulary::{self, MAX_MODEL_LEN};

/// The seed of the weights; part of what a recording names as its model.
pub const WEIGHT_SEED: u64 = 0;

/// How recorded fixtures name this model.
pub fn description() -> String {
    format!("genconform tiny random Llama (hidden {HIDDEN}, {LAYERS} layer, seed {WEIGHT_SEED})")
}

const HIDDEN: usize = 64;
const INTERMEDIATE: usize = 128;
const LAYERS: usize = 1;
const HEADS: usize = 2;
const KV_HEADS: usize = 2;
/// vLLM's CPU attention takes head sizes 32, 64, 80, 96, 112, 128, 160 and up.
const HEAD_DIM: usize = HIDDEN / HEADS;
const _: () = assert!(HEAD_DIM == 32);

fn vocab_size() -> usize {
    vocabulary::size()
}

/// Writes the tokenizer, its config, the model config and seeded random
/// weights into `dir` (created if needed).
pub fn write_model_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, value) in [
        ("tokenizer.json", vocabulary::tokenizer_json()),
        ("tokenizer_config.json", vocabulary::tokenizer_config_json()),
        ("config.json", config()),
    ] {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(&value)?)?;
    }
    write_weights(&dir.join("model.safetensors"))
}

fn config() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab_size(),
        "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
        "max_position_embeddings": MAX_MODEL_LEN, "bos_token_id": vocabulary::BOS,
        "eos_token_id": vocabulary::EOS, "torch_dtype": "float32", "rms_norm_eps": 1e-5,
        "tie_word_embeddings": false
    })
}

/// The tensors of `LlamaForCausalLM`, by the names vLLM's loader expects,
/// with their shapes and the spread of their initial values (`None`: ones,
/// for the norms).
fn tensors() -> Vec<(String, Vec<usize>, Option<f32>)> {
    let v = vocab_size();
    // Wide embeddings and output head spread the logits, so greedy choices
    // are decided by clear margins rather than by rounding.
    let mut out = vec![
        (
            "model.embed_tokens.weight".to_string(),
            vec![v, HIDDEN],
            Some(1.0),
        ),
        ("model.norm.weight".to_string(), vec![HIDDEN], None),
        ("lm_head.weight".to_string(), vec![v, HIDDEN], Some(0.25)),
    ];
    for layer in 0..LAYERS {
        let p = |name: &str| format!("model.layers.{layer}.{name}.weight");
        let kv = KV_HEADS * HEAD_DIM;
        out.extend([
            (p("input_layernorm"), vec![HIDDEN], None),
            (p("post_attention_layernorm"), vec![HIDDEN], None),
            (
                p("self_attn.q_proj"),
                vec![HEADS * HEAD_DIM, HIDDEN],
                Some(0.1),
            ),
            (p("self_attn.k_proj"), vec![kv, HIDDEN], Some(0.1)),
            (p("self_attn.v_proj"), vec![kv, HIDDEN], Some(0.1)),
            (
                p("self_attn.o_proj"),
                vec![HIDDEN, HEADS * HEAD_DIM],
                Some(0.1),
            ),
            (p("mlp.gate_proj"), vec![INTERMEDIATE, HIDDEN], Some(0.1)),
            (p("mlp.up_proj"), vec![INTERMEDIATE, HIDDEN], Some(0.1)),
            (p("mlp.down_proj"), vec![HIDDEN, INTERMEDIATE], Some(0.1)),
        ]);
    }
    out
}

/// Seeded weights in safetensors: one generator walks the tensors in a fixed
/// order, so the file is the same bytes every time.
fn weights() -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(WEIGHT_SEED);
    tensors()
        .into_iter()
        .map(|(name, shape, spread)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = match spread {
                None => vec![1.0; n],
                Some(std) => {
                    let normal = Normal::new(0.0f32, std).expect("a positive spread");
                    (0..n).map(|_| normal.sample(&mut rng)).collect()
                }
            };
            let bytes = values.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect()
}

fn write_weights(path: &Path) -> std::io::Result<()> {
    let weights = weights();
    let views = weights
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.as_str(), view))
                .map_err(std::io::Error::other)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    // transformers and vLLM read the format from the metadata.
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata.into_iter().collect()))
        .map_err(std::io::Error::other)?;
    // The file is large next to the rest: leave an identical one alone.
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use safetensors::SafeTensors;

    use super::*;

    #[test]
    fn the_model_dir_has_tokenizer_config_and_weights() {
        let dir = tempfile::tempdir().unwrap();
        write_model_dir(dir.path()).unwrap();
        let tok: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("tokenizer.json")).unwrap())
                .unwrap();
        assert_eq!(tok["model"]["vocab"]["t3839"], 3839);
        assert_eq!(tok["model"]["vocab"]["<0xFF>"], 4095);
        assert_eq!(tok["model"]["vocab"]["</s>"], VOCAB + 2);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["vocab_size"], vocab_size());
        let tc: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        assert!(tc["chat_template"].as_str().unwrap().contains("messages"));
    }

    #[test]
    fn the_weights_have_every_tensor_with_its_shape() {
        let dir = tempfile::tempdir().unwrap();
        write_model_dir(dir.path()).unwrap();
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), tensors().len());
        let embed = st.tensor("model.embed_tokens.weight").unwrap();
        assert_eq!(embed.shape(), &[vocab_size(), HIDDEN]);
        assert_eq!(embed.dtype(), Dtype::F32);
        let norm = st.tensor("model.norm.weight").unwrap();
        assert!(
            norm.data()
                .chunks(4)
                .all(|c| f32::from_le_bytes(c.try_into().unwrap()) == 1.0)
        );
        let q = st.tensor("model.layers.0.self_attn.q_proj.weight").unwrap();
        assert_eq!(q.shape(), &[HEADS * HEAD_DIM, HIDDEN]);
    }

    #[test]
    fn the_weights_are_the_same_bytes_every_time_and_not_constant() {
        let a = weights();
        let b = weights();
        assert_eq!(a, b);
        let (_, _, embed) = &a[0];
        let first = &embed[..4];
        assert!(embed.chunks(4).any(|c| c != first), "weights are random");
    }
}
