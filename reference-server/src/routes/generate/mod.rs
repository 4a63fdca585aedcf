pub mod collect;
pub mod logprobs;
pub mod stream;
pub mod types;
pub mod weight_versions;
