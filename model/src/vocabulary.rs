//! The tiny model's vocabulary, tokenizer and chat template, as the JSON files
//! of its model directory.
//!
//! Ids `0..3840` are the words `t0` .. `t3839`, so a text prompt `"t5 t7"` is
//! the ids `[5, 7]` and a fixture can say which ids a text becomes by reading
//! it. Ids `3840..4096` are the 256 bytes `<0x00>` .. `<0xFF>`, decoded by
//! byte fallback: `é` is the two tokens `<0xC3> <0xA9>`, so a script can emit a
//! character that ends in the middle of a token, which every incremental
//! detokenizer must hold back until the character is whole. Then three
//! specials: `<unk>`, `<s>`, `</s>`.
//!
//! ```
//! assert_eq!(model::vocabulary::byte_token(0xC3), 3840 + 0xC3);
//! assert_eq!(model::vocabulary::EOS, 4098);
//! ```

use serde_json::{Value, json};

/// Tokens that are not special: the words, then the bytes.
pub const VOCAB: u32 = 4096;

/// The first byte token, `<0x00>`; the words `t<i>` are the ids below it.
pub const BYTES_START: u32 = VOCAB - 256;

/// `<unk>`: what an unknown word encodes to.
pub const UNK: u32 = VOCAB;
/// `<s>`, the beginning of a sequence (no prompt gets it added).
pub const BOS: u32 = VOCAB + 1;
/// `</s>`, the end of a sequence.
pub const EOS: u32 = VOCAB + 2;

/// The context window the frontends are told (and the engines report).
pub const MAX_MODEL_LEN: u32 = 2048;

const SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];

/// Every token id the model has, specials included.
pub fn size() -> usize {
    VOCAB as usize + SPECIALS.len()
}

/// The token of one byte.
pub fn byte_token(byte: u8) -> u32 {
    BYTES_START + u32::from(byte)
}

/// The token ids of a text's UTF-8 bytes, one token per byte: how a script
/// emits characters that are not words of the vocabulary.
pub fn byte_tokens(text: &str) -> Vec<u32> {
    text.bytes().map(byte_token).collect()
}

/// The chat template: a role word before each message's content, and the
/// assistant's role word for the generation prompt. A user message `t10 t11`
/// renders `t3 t10 t11 t4 `, the ids `[3, 10, 11, 4]`. Roles: system `t2`,
/// user `t3`, assistant `t4`, anything else `t5`.
pub const CHAT_TEMPLATE: &str = "{% for m in messages %}\
{% if m['role'] == 'system' %}t2{% elif m['role'] == 'user' %}t3\
{% elif m['role'] == 'assistant' %}t4{% else %}t5{% endif %} {{ m['content'] }} \
{% endfor %}{% if add_generation_prompt %}t4 {% endif %}";

/// `tokenizer.json`: a word-level model over whitespace-split words, whose
/// decoder turns byte tokens into characters (byte fallback) and puts one
/// space between words (word-piece joining, with no `##` continuations).
pub fn tokenizer_json() -> Value {
    let mut vocab = serde_json::Map::new();
    for i in 0..BYTES_START {
        vocab.insert(format!("t{i}"), i.into());
    }
    for byte in 0..=255u8 {
        vocab.insert(format!("<0x{byte:02X}>"), byte_token(byte).into());
    }
    for (i, s) in SPECIALS.iter().enumerate() {
        vocab.insert(s.to_string(), (VOCAB + i as u32).into());
    }
    let added: Vec<Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": VOCAB + i as u32, "content": s, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteFallback"},
            {"type": "WordPiece", "prefix": "##", "cleanup": false}
        ]},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

/// `tokenizer_config.json`, with the chat template.
pub fn tokenizer_config_json() -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": MAX_MODEL_LEN,
        "clean_up_tokenization_spaces": false, "add_bos_token": false,
        "chat_template": CHAT_TEMPLATE
    })
}
