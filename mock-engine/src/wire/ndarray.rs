//! Arrays as vLLM's `MsgpackEncoder` sends them (`v1/serial_utils.py`).
//!
//! An ndarray or tensor is the triple `[dtype, shape, data]`. `data` is either
//! the raw little-endian bytes inline as msgpack extension type 3
//! (`CUSTOM_TYPE_RAW_VIEW`, used below vLLM's 256-byte threshold) or the index
//! of an extra frame of the multipart message. numpy arrays name the dtype
//! numpy's way (`<i4`), torch tensors torch's way (`int32`).

use bytes::Bytes;
use rmpv::Value;

use super::error::{Brief, WireError};

/// `CUSTOM_TYPE_RAW_VIEW` in `vllm/v1/serial_utils.py`.
pub const RAW_VIEW_EXT: i8 = 3;

/// Element types the logprobs arrays use, and (from vLLM 0.34.0) the
/// request's `prompt_token_ids` (`uint32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    I32,
    I64,
    F32,
    U32,
}

/// Whether the array came from numpy (`LogprobsLists`) or torch (`LogprobsTensors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtypeNaming {
    Numpy,
    Torch,
}

impl Dtype {
    pub fn name(self, naming: DtypeNaming) -> &'static str {
        match (self, naming) {
            (Self::I32, DtypeNaming::Numpy) => "<i4",
            (Self::I64, DtypeNaming::Numpy) => "<i8",
            (Self::F32, DtypeNaming::Numpy) => "<f4",
            (Self::I32, DtypeNaming::Torch) => "int32",
            (Self::I64, DtypeNaming::Torch) => "int64",
            (Self::F32, DtypeNaming::Torch) => "float32",
            (Self::U32, DtypeNaming::Numpy) => "<u4",
            (Self::U32, DtypeNaming::Torch) => "uint32",
        }
    }

    /// numpy writes native byte order as `=` (0.34.0's prompt ids: `=u4`);
    /// every platform vLLM runs on is little-endian, so it reads as `<`.
    fn parse(name: &str) -> Option<(Self, DtypeNaming)> {
        let name = match name.strip_prefix('=') {
            Some(rest) => format!("<{rest}"),
            None => name.to_string(),
        };
        [Self::I32, Self::I64, Self::F32, Self::U32]
            .into_iter()
            .flat_map(|d| [(d, DtypeNaming::Numpy), (d, DtypeNaming::Torch)])
            .find(|(d, n)| d.name(*n) == name)
    }

    fn width(self) -> usize {
        match self {
            Self::I32 | Self::F32 | Self::U32 => 4,
            Self::I64 => 8,
        }
    }
}

/// One array: element type, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    pub dtype: Dtype,
    pub naming: DtypeNaming,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl NdArray {
    pub fn from_i32(naming: DtypeNaming, shape: Vec<usize>, values: &[i32]) -> Self {
        Self::build(
            Dtype::I32,
            naming,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    pub fn from_i64(naming: DtypeNaming, shape: Vec<usize>, values: &[i64]) -> Self {
        Self::build(
            Dtype::I64,
            naming,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    pub fn from_f32(naming: DtypeNaming, shape: Vec<usize>, values: &[f32]) -> Self {
        Self::build(
            Dtype::F32,
            naming,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    fn build(
        dtype: Dtype,
        naming: DtypeNaming,
        shape: Vec<usize>,
        data: impl Iterator<Item = u8>,
    ) -> Self {
        let data: Vec<u8> = data.collect();
        debug_assert_eq!(data.len(), shape.iter().product::<usize>() * dtype.width());
        Self {
            dtype,
            naming,
            shape,
            data,
        }
    }

    /// Elements as i64 (integer arrays) or `None` for float arrays.
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        match self.dtype {
            Dtype::I32 => Some(
                self.data
                    .chunks_exact(4)
                    .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap())))
                    .collect(),
            ),
            Dtype::I64 => Some(
                self.data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::U32 => Some(
                self.data
                    .chunks_exact(4)
                    .map(|c| i64::from(u32::from_le_bytes(c.try_into().unwrap())))
                    .collect(),
            ),
            Dtype::F32 => None,
        }
    }

    pub fn to_f32s(&self) -> Option<Vec<f32>> {
        (self.dtype == Dtype::F32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        })
    }

    /// Always inline: we never split arrays into extra frames, and both
    /// frontends accept inline data of any size.
    pub fn to_value(&self) -> Value {
        Value::Array(vec![
            Value::from(self.dtype.name(self.naming)),
            Value::Array(self.shape.iter().map(|&d| Value::from(d as u64)).collect()),
            Value::Ext(RAW_VIEW_EXT, self.data.clone()),
        ])
    }

    /// Reads inline data or data in extra frame `aux[index]`.
    pub fn from_value(
        message: &'static str,
        value: &Value,
        aux: &[Bytes],
    ) -> Result<Self, WireError> {
        let bad = |expected| WireError::Shape {
            message,
            expected,
            got: Brief(value).to_string(),
        };
        let [dtype, shape, data] = value.as_array().map(Vec::as_slice).unwrap_or(&[]) else {
            return Err(bad("an array [dtype, shape, data]"));
        };
        let (dtype, naming) = dtype
            .as_str()
            .and_then(Dtype::parse)
            .ok_or_else(|| bad("a dtype of int32, int64, uint32 or float32"))?;
        let shape: Vec<usize> = shape
            .as_array()
            .and_then(|dims| {
                dims.iter()
                    .map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            })
            .ok_or_else(|| bad("a shape of non-negative integers"))?;
        let data = match data {
            Value::Ext(RAW_VIEW_EXT, bytes) => bytes.clone(),
            Value::Integer(i) => {
                let index = i.as_u64().unwrap_or(u64::MAX) as usize;
                aux.get(index)
                    .map(|b| b.to_vec())
                    .ok_or_else(|| bad("data in an extra frame that exists"))?
            }
            _ => return Err(bad("data as extension type 3 or a frame index")),
        };
        if data.len() != shape.iter().product::<usize>() * dtype.width() {
            return Err(bad("as many bytes as the shape and dtype say"));
        }
        Ok(Self {
            dtype,
            naming,
            shape,
            data,
        })
    }
}

/// vLLM's `LogprobsLists` (numpy): per position, the sampled token then the
/// top candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct LogprobsLists {
    /// `[positions, 1 + top]`
    pub logprob_token_ids: NdArray,
    /// `[positions, 1 + top]`
    pub logprobs: NdArray,
    /// `[positions]`: the sampled token's rank.
    pub sampled_token_ranks: NdArray,
    pub cu_num_generated_tokens: Option<Vec<i64>>,
}

/// vLLM's `LogprobsTensors` (torch), used for prompt logprobs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogprobsTensors {
    pub logprob_token_ids: NdArray,
    pub logprobs: NdArray,
    pub selected_token_ranks: NdArray,
    pub cu_num_generated_tokens: Option<Vec<i64>>,
}

fn cu_value(cu: &Option<Vec<i64>>) -> Value {
    cu.as_ref().map_or(Value::Nil, |c| {
        Value::Array(c.iter().map(|&x| Value::from(x)).collect())
    })
}

fn cu_from(message: &'static str, value: Option<&Value>) -> Result<Option<Vec<i64>>, WireError> {
    match value {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(Value::as_i64).collect())
            .map(Some)
            .ok_or_else(|| WireError::Shape {
                message,
                expected: "cu_num_generated_tokens as a list of integers or nil",
                got: Brief(v).to_string(),
            }),
    }
}

/// The three arrays both named tuples start with.
fn three<'a>(
    message: &'static str,
    value: &'a Value,
    aux: &[Bytes],
    max_len: usize,
) -> Result<(NdArray, NdArray, NdArray, &'a [Value]), WireError> {
    let items = value
        .as_array()
        .filter(|a| (3..=max_len).contains(&a.len()))
        .ok_or_else(|| WireError::Shape {
            message,
            expected: "a named tuple of 3 arrays and optional extras",
            got: Brief(value).to_string(),
        })?;
    Ok((
        NdArray::from_value(message, &items[0], aux)?,
        NdArray::from_value(message, &items[1], aux)?,
        NdArray::from_value(message, &items[2], aux)?,
        &items[3..],
    ))
}

impl LogprobsLists {
    /// A `NamedTuple` goes on the wire as a full array, defaults included.
    pub fn to_value(&self) -> Value {
        Value::Array(vec![
            self.logprob_token_ids.to_value(),
            self.logprobs.to_value(),
            self.sampled_token_ranks.to_value(),
            cu_value(&self.cu_num_generated_tokens),
        ])
    }

    pub fn from_value(value: &Value, aux: &[Bytes]) -> Result<Self, WireError> {
        const M: &str = "LogprobsLists";
        let (ids, lps, ranks, rest) = three(M, value, aux, 4)?;
        Ok(Self {
            logprob_token_ids: ids,
            logprobs: lps,
            sampled_token_ranks: ranks,
            cu_num_generated_tokens: cu_from(M, rest.first())?,
        })
    }
}

impl LogprobsTensors {
    pub fn to_value(&self) -> Value {
        Value::Array(vec![
            self.logprob_token_ids.to_value(),
            self.logprobs.to_value(),
            self.selected_token_ranks.to_value(),
            cu_value(&self.cu_num_generated_tokens),
            Value::Nil,
        ])
    }

    pub fn from_value(value: &Value, aux: &[Bytes]) -> Result<Self, WireError> {
        const M: &str = "LogprobsTensors";
        let (ids, lps, ranks, rest) = three(M, value, aux, 5)?;
        Ok(Self {
            logprob_token_ids: ids,
            logprobs: lps,
            selected_token_ranks: ranks,
            cu_num_generated_tokens: cu_from(M, rest.first())?,
        })
    }
}
