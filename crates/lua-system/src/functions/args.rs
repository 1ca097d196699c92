//! Argument checking, with Lua's wording: `bad argument #1 to 'name' (number expected, got
//! string)`. A bad argument is a failure the caller receives as `nil, message`, never a raised
//! error, and it is detected before anything is changed. Numbers in messages are shown as Lua's
//! `tostring` shows them, as the script gave them.

use std::ffi::c_int;
use std::fmt;

use crate::ffi::{Arg, Call};
use crate::functions::answer::Failure;
use crate::state::StateRecord;
use crate::text::text;

/// A failure for argument `n`.
pub(crate) fn bad_argument(n: c_int, problem: fmt::Arguments<'_>) -> Failure {
    Failure::BadArgument { n, problem: text!("{problem}") }
}

/// An integer argument, with the number as the script wrote it (for messages).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Integer {
    /// The value; integral floats beyond the 64-bit range (`1e300`) saturate to
    /// `i64::MIN`/`i64::MAX`, and each function then clamps or refuses them.
    pub value: i64,
    /// The argument as given.
    pub given: Arg,
}

impl fmt::Display for Integer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.given {
            Arg::Float(value) => LuaNumber(value).fmt(f),
            _ => write!(f, "{}", self.value),
        }
    }
}

/// Argument `n` as an integer: Lua integers, and floats with an integral value. Fractions,
/// NaN and infinities are refused.
pub(crate) fn integer(call: &Call<'_, StateRecord>, n: c_int) -> Result<Integer, Failure> {
    optional_integer(call, n)?
        .ok_or_else(|| bad_argument(n, format_args!("number expected, got {}", call.arg(n).type_name())))
}

/// Like [`integer`], but absent and `nil` give `None`.
pub(crate) fn optional_integer(call: &Call<'_, StateRecord>, n: c_int) -> Result<Option<Integer>, Failure> {
    let given = call.arg(n);
    match given {
        Arg::Absent | Arg::Nil => Ok(None),
        Arg::Integer(value) => Ok(Some(Integer { value, given })),
        Arg::Float(value) if value.is_finite() && value.fract() == 0.0 => {
            Ok(Some(Integer { value: value as i64, given }))
        }
        Arg::Float(value) => Err(bad_argument(n, format_args!("integer expected, got {}", LuaNumber(value)))),
        other => Err(bad_argument(n, format_args!("number expected, got {}", other.type_name()))),
    }
}

/// A float shown as Lua's `tostring` shows it: C's `%.14g` (`nan`, `inf`, `-inf`, `1e+300`,
/// `0.1`), with `.0` added to integral values from Lua 5.3 on (`50.0`).
pub(crate) struct LuaNumber(pub f64);

impl fmt::Display for LuaNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            // C's printf shows the sign bit (0/0 is -nan on x86-64); LuaJIT's own formatter
            // does not.
            let negative = v.is_sign_negative() && cfg!(not(feature = "luajit"));
            return f.write_str(if negative { "-nan" } else { "nan" });
        }
        if v.is_infinite() {
            return f.write_str(if v > 0.0 { "inf" } else { "-inf" });
        }
        let shown = percent_14g(v);
        let looks_integral = shown.bytes().all(|b| b == b'-' || b.is_ascii_digit());
        if looks_integral && cfg!(not(any(feature = "lua51", feature = "lua52", feature = "luajit"))) {
            write!(f, "{shown}.0")
        } else {
            f.write_str(&shown)
        }
    }
}

/// C's `printf("%.14g", v)` for a finite `v`.
fn percent_14g(v: f64) -> String {
    const PRECISION: i32 = 14;
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // 14 significant digits, correctly rounded, and the decimal exponent after rounding.
    let scientific = format!("{:.*e}", (PRECISION - 1) as usize, v);
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s.to_owned() }
    };
    if !(-4..PRECISION).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exponent.abs())
    } else {
        let decimals = (PRECISION - 1 - exponent).max(0) as usize;
        trim(&format!("{v:.decimals$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_show_as_c_percent_14g() {
        for (value, shown) in [
            (1e300, "1e+300"),
            (-1e300, "-1e+300"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (123456789012345.0, "1.2345678901234e+14"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (-(2f64.powi(63)), "-9.2233720368548e+18"),
            (2f64.powi(53), "9.007199254741e+15"),
        ] {
            assert_eq!(percent_14g(value), shown, "{value}");
        }
    }

    #[test]
    fn integral_floats_get_a_fraction_from_lua_5_3_on() {
        let shown = LuaNumber(50.0).to_string();
        if cfg!(any(feature = "lua51", feature = "lua52", feature = "luajit")) {
            assert_eq!(shown, "50");
        } else {
            assert_eq!(shown, "50.0");
        }
        assert_eq!(LuaNumber(f64::NEG_INFINITY).to_string(), "-inf");
    }
}
