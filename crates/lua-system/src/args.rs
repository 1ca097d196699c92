//! Argument checking, with Lua's wording: `bad argument #1 to 'name' (number expected, got
//! string)`. A bad argument is a failure the caller receives as `nil, message`, never a raised
//! error, and it is detected before anything is changed.

use std::fmt;

use crate::ffi::{Arg, Call};
use crate::text::{Text, text};

/// The message for a bad argument `n` of the called function.
pub(crate) fn bad_argument(call: &Call<'_>, n: i32, problem: fmt::Arguments<'_>) -> Text {
    text!("bad argument #{n} to '{}' ({problem})", call.name())
}

/// Argument `n` as an integer: Lua integers, and floats with an integral value. Integral floats
/// beyond the 64-bit range (`1e300`) saturate to `i64::MIN`/`i64::MAX`; each function then
/// clamps or refuses them. Fractions, NaN and infinities are refused.
pub(crate) fn integer(call: &Call<'_>, n: i32) -> Result<i64, Text> {
    optional_integer(call, n)?
        .ok_or_else(|| bad_argument(call, n, format_args!("number expected, got {}", call.arg(n).type_name())))
}

/// Like [`integer`], but absent and `nil` give `None`.
pub(crate) fn optional_integer(call: &Call<'_>, n: i32) -> Result<Option<i64>, Text> {
    match call.arg(n) {
        Arg::Absent | Arg::Nil => Ok(None),
        Arg::Integer(value) => Ok(Some(value)),
        Arg::Float(value) if value.is_finite() && value.fract() == 0.0 => Ok(Some(value as i64)),
        Arg::Float(value) => Err(bad_argument(call, n, format_args!("integer expected, got {}", LuaNumber(value)))),
        other => Err(bad_argument(call, n, format_args!("number expected, got {}", other.type_name()))),
    }
}

/// A float shown as Lua shows it (`nan`, `inf`, `-inf`, `1.5`).
struct LuaNumber(f64);

impl fmt::Display for LuaNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("nan"),
            v if v.is_infinite() => f.write_str(if v > 0.0 { "inf" } else { "-inf" }),
            v => write!(f, "{v}"),
        }
    }
}
