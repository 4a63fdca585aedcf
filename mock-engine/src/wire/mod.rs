//! vLLM's engine-core wire protocol: one type per message, msgpack on the wire.
//!
//! vLLM declares its request/output structs `array_like=True`: they travel as
//! positional msgpack arrays (vLLM's encoder writes every field; both
//! frontends also accept arrays cut after the last non-default field), and the
//! positions move between releases. Every positional
//! message is therefore encoded and decoded through a [`Layout`], never
//! through a hard-coded index: one read from the install ([`LayoutFile`],
//! checked by [`check_layout`]) or the hand-written table of a [`VllmVersion`].
//!
//! ```
//! use mock_engine::wire::{EngineCoreOutput, EngineCoreOutputs, VllmVersion};
//!
//! let layout = VllmVersion::V0_32_0.layout();
//! let outputs = EngineCoreOutputs::batch(0, vec![EngineCoreOutput::tokens("req-1", vec![33])], 1.5);
//! let bytes = outputs.encode(layout);
//! assert_eq!(EngineCoreOutputs::decode(layout, &bytes, &[]).unwrap(), outputs);
//! ```

mod error;
mod handshake;
mod layout;
mod layout_check;
mod layout_file;
mod ndarray;
mod output;
mod positional;
mod request;

pub use error::WireError;
pub use handshake::{HandshakeStatus, InitMessage, ReadyResponse, StatusKind};
pub use layout::{Field, FieldDefault, Layout, Struct, TABLE, UnsupportedVersion, VllmVersion};
pub use layout_check::{LayoutError, LayoutReport, UnknownField, check as check_layout};
pub use layout_file::{FileField, LayoutFile};
pub use ndarray::{Dtype, DtypeNaming, LogprobsLists, LogprobsTensors, NdArray, RAW_VIEW_EXT};
pub use output::{
    DEFAULT_WEIGHT_VERSION, ENGINE_CORE_DEAD, EngineCoreOutput, EngineCoreOutputs, OutputsWriter,
    PrefillStats, UtilityOutput, WireStopReason,
};
pub use request::{AbortRequest, EngineCoreRequest, RequestType, SamplingParams, UtilityCall};

/// Encodes one msgpack value the way msgspec does for the same data
/// (smallest integer and string forms, maps in insertion order).
pub fn to_bytes(value: &rmpv::Value) -> Vec<u8> {
    let mut buf = Vec::new();
    positional::write_value(&mut buf, value);
    buf
}

/// Why every msgpack write into a `Vec` may `expect`.
const IN_MEMORY: &str = "writing msgpack into a Vec cannot fail";

/// Decodes exactly one msgpack value; trailing bytes are an error.
pub fn from_bytes(message: &'static str, bytes: &[u8]) -> Result<rmpv::Value, WireError> {
    let mut rest = bytes;
    let value = rmpv::decode::read_value(&mut rest).map_err(|e| WireError::Msgpack {
        message,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(WireError::Msgpack {
            message,
            reason: format!("{} trailing bytes after the value", rest.len()),
        });
    }
    Ok(value)
}
