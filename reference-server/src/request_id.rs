//! Request ids the way vllm-rs picks them.
//!
//! The client sees `X-Request-Id` if the header is present (even empty), else the
//! body's `request_id`, else 8 random hex digits. The engine sees that id plus
//! `-` and another 8 random hex digits, so two requests with the same id do not collide.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderMap;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id the client sees.
pub fn resolve(headers: &HeaderMap, body_id: Option<&str>) -> String {
    if let Some(value) = headers.get(REQUEST_ID_HEADER) {
        return String::from_utf8_lossy(value.as_bytes()).into_owned();
    }
    body_id.map_or_else(random_hex8, str::to_owned)
}

/// The id the engine sees for the client-visible `id`.
pub fn engine_id(id: &str) -> String {
    format!("{id}-{}", random_hex8())
}

/// Eight random hex digits. `RandomState` is seeded from the OS once per process
/// and then per instance, and the counter makes every call distinct: enough for
/// ids, without a dependency on a random number crate.
pub fn random_hex8() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:08x}", hasher.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_wins_even_when_empty() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, "".parse().unwrap());
        assert_eq!(resolve(&headers, Some("body")), "");
        assert_eq!(resolve(&HeaderMap::new(), Some("body")), "body");
    }

    #[test]
    fn random_ids_are_eight_hex_digits_and_differ() {
        let a = resolve(&HeaderMap::new(), None);
        let b = random_hex8();
        assert_eq!(a.len(), 8);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
        let e = engine_id("x");
        assert!(e.starts_with("x-") && e.len() == 10);
    }
}
