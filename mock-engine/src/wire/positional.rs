//! Reading and writing `array_like` structs by field name through a layout.

use rmpv::Value;

use super::IN_MEMORY;
use super::error::{Brief, WireError};
use super::layout::Field;

/// A decoded positional array, read by field name.
pub(crate) struct Reader<'a> {
    pub message: &'static str,
    pub version: &'static str,
    fields: &'static [Field],
    values: &'a [Value],
}

impl<'a> Reader<'a> {
    pub fn new(
        message: &'static str,
        version: &'static str,
        fields: &'static [Field],
        value: &'a Value,
    ) -> Result<Self, WireError> {
        let Value::Array(values) = value else {
            return Err(WireError::Shape {
                message,
                expected: "a msgpack array",
                got: Brief(value).to_string(),
            });
        };
        if values.len() > fields.len() {
            return Err(WireError::TooManyFields {
                message,
                version,
                got: values.len(),
                known: fields.len(),
            });
        }
        Ok(Self {
            message,
            version,
            fields,
            values,
        })
    }

    fn position(&self, name: &'static str) -> usize {
        self.fields
            .iter()
            .position(|f| f.name == name)
            .unwrap_or_else(|| panic!("{} layout has no field {name}", self.message))
    }

    /// The value on the wire, or `None` when the field was left off (default).
    pub fn get(&self, name: &'static str) -> Result<Option<&'a Value>, WireError> {
        let position = self.position(name);
        match self.values.get(position) {
            Some(v) => Ok(Some(v)),
            None if self.fields[position].default.value().is_some() => Ok(None),
            None => Err(WireError::Missing {
                message: self.message,
                field: name,
            }),
        }
    }

    /// [`Self::opt_str`] of a field older layouts lack (`None` there).
    pub fn opt_str_if_present(&self, name: &'static str) -> Result<Option<String>, WireError> {
        if self.fields.iter().any(|f| f.name == name) {
            self.opt_str(name)
        } else {
            Ok(None)
        }
    }

    /// The value, with nil and left-off both meaning `None`.
    pub fn opt(&self, name: &'static str) -> Result<Option<&'a Value>, WireError> {
        Ok(self.get(name)?.filter(|v| !v.is_nil()))
    }

    pub fn mistyped(&self, name: &'static str, expected: &'static str, got: &Value) -> WireError {
        WireError::Field {
            message: self.message,
            version: self.version,
            field: name,
            position: self.position(name),
            expected,
            got: Brief(got).to_string(),
        }
    }

    pub fn str(&self, name: &'static str) -> Result<String, WireError> {
        match self.get(name)? {
            Some(Value::String(s)) if s.as_str().is_some() => Ok(s.as_str().unwrap().to_string()),
            Some(other) => Err(self.mistyped(name, "a string", other)),
            None => Err(WireError::Missing {
                message: self.message,
                field: name,
            }),
        }
    }

    pub fn opt_str(&self, name: &'static str) -> Result<Option<String>, WireError> {
        match self.opt(name)? {
            Some(Value::String(s)) if s.as_str().is_some() => {
                Ok(Some(s.as_str().unwrap().to_string()))
            }
            Some(other) => Err(self.mistyped(name, "a string or nil", other)),
            None => Ok(None),
        }
    }

    pub fn int_or(&self, name: &'static str, default: i64) -> Result<i64, WireError> {
        match self.get(name)? {
            Some(v) => v
                .as_i64()
                .ok_or_else(|| self.mistyped(name, "an integer", v)),
            None => Ok(default),
        }
    }

    pub fn opt_int(&self, name: &'static str) -> Result<Option<i64>, WireError> {
        match self.opt(name)? {
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.mistyped(name, "an integer or nil", v)),
            None => Ok(None),
        }
    }

    pub fn float_or(&self, name: &'static str, default: f64) -> Result<f64, WireError> {
        match self.get(name)? {
            Some(Value::F64(x)) => Ok(*x),
            Some(Value::F32(x)) => Ok(f64::from(*x)),
            Some(Value::Integer(i)) => Ok(i.as_f64().unwrap_or_default()),
            Some(other) => Err(self.mistyped(name, "a float", other)),
            None => Ok(default),
        }
    }

    /// A list of ids, or (vLLM 0.34.0 on) a 1-D integer ndarray, inline or
    /// in the extra frame `aux` holds.
    pub fn opt_token_ids(
        &self,
        name: &'static str,
        aux: &[bytes::Bytes],
    ) -> Result<Option<Vec<u32>>, WireError> {
        let Some(v) = self.opt(name)? else {
            return Ok(None);
        };
        if let Some(ids) = token_ids(v) {
            return Ok(Some(ids));
        }
        let from_array = super::ndarray::NdArray::from_value(self.message, v, aux)
            .ok()
            .filter(|a| a.shape.len() == 1)
            .and_then(|a| a.to_i64s())
            .and_then(|ids| ids.into_iter().map(|i| u32::try_from(i).ok()).collect());
        from_array
            .map(Some)
            .ok_or_else(|| self.mistyped(name, "a list of token ids or a 1-D integer ndarray", v))
    }

    pub fn opt_map(&self, name: &'static str) -> Result<Option<&'a Value>, WireError> {
        match self.opt(name)? {
            Some(v @ Value::Map(_)) => Ok(Some(v)),
            Some(other) => Err(self.mistyped(name, "a map or nil", other)),
            None => Ok(None),
        }
    }
}

pub(crate) fn token_ids(value: &Value) -> Option<Vec<u32>> {
    value
        .as_array()?
        .iter()
        .map(|t| t.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

/// Builds a positional array field by field; unset fields keep their default.
pub(crate) struct Writer {
    fields: &'static [Field],
    values: Vec<Value>,
}

impl Writer {
    pub fn new(fields: &'static [Field]) -> Self {
        Self {
            fields,
            values: fields
                .iter()
                .map(|f| f.default.value().unwrap_or(Value::Nil))
                .collect(),
        }
    }

    pub fn set(&mut self, name: &'static str, value: impl Into<Value>) -> &mut Self {
        let position = self
            .fields
            .iter()
            .position(|f| f.name == name)
            .unwrap_or_else(|| panic!("layout has no field {name}"));
        self.values[position] = value.into();
        self
    }

    /// [`Self::set`] of a field older layouts lack (left out there).
    pub fn set_if_present(&mut self, name: &'static str, value: impl Into<Value>) -> &mut Self {
        if let Some(position) = self.fields.iter().position(|f| f.name == name) {
            self.values[position] = value.into();
        }
        self
    }

    /// The whole array, every field in order: vLLM's encoder writes array-like
    /// structs in full (`omit_defaults` does not shorten them; see the bytes
    /// in tests/data), so doing the same keeps our bytes equal to theirs.
    pub fn finish(self) -> Value {
        Value::Array(self.values)
    }
}

/// Writes a positional array straight into `buf`, in layout order: the
/// same bytes as a [`Writer`]'s array, without building a value tree.
/// `field` writes the named field and returns `true`, or returns `false` to
/// leave its default.
pub(crate) fn write_fields(
    buf: &mut Vec<u8>,
    fields: &'static [Field],
    mut field: impl FnMut(&'static str, &mut Vec<u8>) -> bool,
) {
    let len = u32::try_from(fields.len()).expect("a layout has a few dozen fields");
    rmp::encode::write_array_len(buf, len).expect(IN_MEMORY);
    for f in fields {
        if !field(f.name, buf) {
            f.default.write(buf);
        }
    }
}

pub(crate) fn write_value(buf: &mut Vec<u8>, value: &Value) {
    rmpv::encode::write_value(buf, value).expect(IN_MEMORY);
}

/// A msgpack map with string keys, in the given order.
pub(crate) fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// Looks a key up in a msgpack map with string keys.
pub(crate) fn lookup<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}
