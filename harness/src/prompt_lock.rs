//! One lock per prompt: the scripted engine picks a request's script by its
//! prompt, so two requests in flight with one prompt would meet each other's
//! script. A case holds its prompt's lock from registering its script to
//! its last answer; cases with other prompts run beside it.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use harness::prompt_lock::PromptLocks;
//!
//! let locks = PromptLocks::default();
//! let held = locks.lock(&[1, 2, 3]).await;
//! // Another prompt is free; the same one waits until `held` is dropped.
//! let _other = locks.lock(&[4]).await;
//! let wait = std::time::Duration::from_millis(50);
//! assert!(tokio::time::timeout(wait, locks.lock(&[1, 2, 3])).await.is_err());
//! drop(held);
//! let _again = locks.lock(&[1, 2, 3]).await;
//! # });
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// The locks of the prompts in flight.
#[derive(Default)]
pub struct PromptLocks {
    held: Mutex<HashMap<Vec<u32>, Arc<tokio::sync::Mutex<()>>>>,
}

impl PromptLocks {
    /// Waits until no one else holds `prompt`'s lock, and holds it.
    pub async fn lock(&self, prompt: &[u32]) -> OwnedMutexGuard<()> {
        let lock = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            // Forget the locks nobody holds or waits for, so the map stays
            // as small as the cases in flight.
            held.retain(|_, l| Arc::strong_count(l) > 1);
            held.entry(prompt.to_vec()).or_default().clone()
        };
        lock.lock_owned().await
    }
}
