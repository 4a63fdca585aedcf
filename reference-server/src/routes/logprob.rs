//! A logprob as vLLM puts it on the wire, on every route: `-inf` and NaN
//! (which JSON cannot carry) become a floor.

/// vLLM's floor for a logprob.
pub const LOGPROB_FLOOR: f32 = -9999.0;

/// `logprob`, floored.
///
/// ```
/// use reference_server::routes::logprob::clamp;
/// assert_eq!(clamp(f32::NEG_INFINITY), -9999.0);
/// assert_eq!(clamp(f32::NAN), -9999.0);
/// assert_eq!(clamp(-0.5), -0.5);
/// ```
pub fn clamp(logprob: f32) -> f32 {
    if logprob.is_nan() {
        LOGPROB_FLOOR
    } else {
        logprob.max(LOGPROB_FLOOR)
    }
}
