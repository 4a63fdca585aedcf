use std::fmt;

/// Why a message could not be decoded: always names the message and, when
/// it is one field's fault, the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("{message}: not valid msgpack: {reason}")]
    Msgpack {
        message: &'static str,
        reason: String,
    },
    #[error("{message}: expected {expected}, got {got}")]
    Shape {
        message: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error(
        "{message}: the frontend sent {got} fields but the vLLM {version} layout has {known}; \
         the frontend speaks another vLLM version (choose it with --vllm-version)"
    )]
    TooManyFields {
        message: &'static str,
        version: &'static str,
        got: usize,
        known: usize,
    },
    #[error(
        "{message}: field `{field}` (position {position} in the vLLM {version} layout) \
         should be {expected}, got {got}; the frontend speaks another vLLM version \
         (choose it with --vllm-version)"
    )]
    Field {
        message: &'static str,
        version: &'static str,
        field: &'static str,
        position: usize,
        expected: &'static str,
        got: String,
    },
    #[error("{message}: missing required field `{field}`")]
    Missing {
        message: &'static str,
        field: &'static str,
    },
    #[error(
        "{message}: unknown request type byte {0:#04x}",
        message = "request type frame"
    )]
    UnknownRequestType(u8),
}

/// Short rendering of a value for error messages (never a whole payload).
pub(crate) struct Brief<'a>(pub &'a rmpv::Value);

impl fmt::Display for Brief<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        if text.chars().count() > 60 {
            let head: String = text.chars().take(60).collect();
            write!(f, "{head}…")
        } else {
            f.write_str(&text)
        }
    }
}
