//! The request rules of each family against vllm-rs's, as observed.

use mock_engine::script::Endpoint;
use serde_json::{Value, json};

use super::{Validity, family};

#[test]
fn validity_follows_vllm_rs_order() {
    let v = |b: Value| family(Endpoint::Generate).validity(&b, "tiny");
    assert_eq!(
        v(json!({"token_ids": [1], "sampling_params": {}})),
        Validity::Valid
    );
    assert_eq!(
        v(json!({"token_ids": [], "sampling_params": {}, "model": "x", "stream": "yes"})),
        Validity::Invalid { status: 400 }
    );
    assert_eq!(
        v(json!({"token_ids": [], "sampling_params": {}, "model": "x"})),
        Validity::Invalid { status: 404 }
    );
    assert_eq!(
        v(json!({"token_ids": [1], "sampling_params": {"logprobs": -1}})),
        Validity::Invalid { status: 400 }
    );
    assert_eq!(
        v(json!({"token_ids": [1], "sampling_params": {}, "stream_options": null, "stream": null})),
        Validity::Invalid { status: 400 }
    );
}

#[test]
fn completions_and_chat_validity_follow_vllm_rs() {
    let v = |endpoint, b: Value| family(endpoint).validity(&b, "tiny");
    let bad = |status| Validity::Invalid { status };
    let c = Endpoint::Completions;
    assert_eq!(v(c, json!({"prompt": "t5"})), Validity::Valid);
    assert_eq!(v(c, json!({"prompt": [5], "model": "x"})), bad(404));
    assert_eq!(v(c, json!({"prompt": [5], "max_tokens": 0})), bad(400));
    assert_eq!(v(c, json!({"prompt": [5], "logprobs": 21})), bad(400));
    assert_eq!(v(c, json!({"prompt": [5], "echo": null})), bad(400));
    assert_eq!(v(c, json!({"prompt": []})), bad(400));
    assert_eq!(v(c, json!({"prompt": [5], "stream_options": {}})), bad(400));
    let m = json!([{"role": "user", "content": "t10"}]);
    let chat = Endpoint::Chat;
    assert_eq!(
        v(
            chat,
            json!({"messages": m, "logprobs": true, "top_logprobs": 3})
        ),
        Validity::Valid
    );
    assert_eq!(v(chat, json!({"messages": m, "top_logprobs": 3})), bad(400));
    assert_eq!(v(chat, json!({"messages": m, "logprobs": "yes"})), bad(400));
    assert_eq!(v(chat, json!({"messages": m, "n": 2})), bad(400));
    assert_eq!(
        v(chat, json!({"messages": m, "n": 2, "model": "not-tiny"})),
        bad(404)
    );
}

#[test]
fn every_endpoint_has_its_family() {
    for endpoint in Endpoint::ALL {
        assert_eq!(family(endpoint).endpoint(), endpoint);
    }
}

#[test]
fn the_served_model_by_family() {
    let (generate, chat) = (family(Endpoint::Generate), family(Endpoint::Chat));
    assert!(generate.serves("tiny", "tiny") && chat.serves("tiny", "tiny"));
    assert!(!generate.serves("", "tiny"), "generate wants the name");
    assert!(
        chat.serves("", "tiny"),
        "the OpenAI routes default an empty name"
    );
    assert!(!chat.serves("other", "tiny"));
}
