//! How each Lua version stores the collector's parameters, the one place that knows it: the
//! coding of a percentage (exact, in quarters, or as an 8-bit float), the range of GC percents
//! the module accepts, and the default. `collector.rs` sets and reads parameters through Lua's
//! API with it, `internals.rs` reads them in Lua's global state with it.
//!
//! Go's GOGC percent `p` is Lua's pause `100 + p` in every version (see `collector.rs`); what
//! differs is what Lua keeps of a percentage:
//!
//! | version | storage | `p` range | default |
//! |---|---|---|---|
//! | 5.1, 5.2, 5.3, LuaJIT | an integer: exact | 0..=1_000_000 (the module's cap, against overflow in Lua's threshold arithmetic) | 100 |
//! | 5.4 | a quarter, in a byte | 0..=920 | 100 |
//! | 5.5 | an 8-bit float: 4-bit exponent, 5-bit mantissa | 0..=396_700 | 150 |

pub(crate) use version::*;

/// What any version's pause is, in percent, for a GC percent (clamped to the module's range).
fn pause_for(percent: i64) -> i64 {
    100 + percent.clamp(0, PERCENT_MAX)
}

/// The percent the collector really applies for a GC percent: what Lua keeps of the pause,
/// minus 100.
pub(crate) fn effective_percent(percent: i64) -> i64 {
    stored_pause(percent) - 100
}

#[cfg(any(feature = "lua51", feature = "lua52", feature = "lua53", feature = "luajit"))]
mod version {
    pub(crate) const PERCENT_MAX: i64 = 1_000_000;
    pub(crate) const DEFAULT_PERCENT: i64 = 100;

    /// The pause Lua keeps for a GC percent: exactly `100 + percent`.
    pub(crate) fn stored_pause(percent: i64) -> i64 {
        super::pause_for(percent)
    }
}

#[cfg(feature = "lua54")]
mod version {
    pub(crate) const PERCENT_MAX: i64 = 920;
    pub(crate) const DEFAULT_PERCENT: i64 = 100;

    /// The pause Lua keeps for a GC percent: `100 + percent` in quarters.
    pub(crate) fn stored_pause(percent: i64) -> i64 {
        stored(super::pause_for(percent))
    }

    /// What Lua keeps of a parameter of `percent` (a pause or a multiplier): a quarter of it in
    /// a byte, so the largest is 1020.
    pub(crate) fn stored(percent: i64) -> i64 {
        from_quarters((percent.clamp(0, 1020) / 4) as u8)
    }

    /// The percentage a parameter byte stands for.
    pub(crate) fn from_quarters(byte: u8) -> i64 {
        i64::from(byte) * 4
    }
}

#[cfg(feature = "lua55")]
mod version {
    pub(crate) const PERCENT_MAX: i64 = 396_700;
    pub(crate) const DEFAULT_PERCENT: i64 = 150;

    /// `luaO_codeparam`: a percentage as a byte, 4 bits of exponent, 4 (+1 implicit) of mantissa,
    /// rounding up.
    pub(crate) fn encode(percent: u32) -> u8 {
        if u64::from(percent) >= (0x1F_u64 << (0xF - 7 - 1)) * 100 {
            return 0xFF;
        }
        let p = (percent * 128).div_ceil(100);
        if p < 0x10 {
            p as u8
        } else {
            let log = (u32::BITS - p.leading_zeros()) - 5; // ceil(log2(p + 1)) - 5
            (((p >> log) - 0x10) | ((log + 1) << 4)) as u8
        }
    }

    /// `luaO_applyparam(p, 100)`: the percentage a byte stands for.
    pub(crate) fn decode(code: u8) -> i64 {
        let mut mantissa = i64::from(code & 0xF);
        let mut exponent = i32::from(code >> 4);
        if exponent > 0 {
            exponent -= 1;
            mantissa += 0x10;
        }
        exponent -= 7;
        if exponent >= 0 { (100 * mantissa) << exponent } else { (100 * mantissa) >> -exponent }
    }

    /// The pause Lua keeps for a GC percent: `100 + percent` as an 8-bit float.
    pub(crate) fn stored_pause(percent: i64) -> i64 {
        decode(encode(super::pause_for(percent) as u32))
    }

    /// `luaO_applyparam`: `x` times the percentage the byte `p` stands for, over 100.
    pub(crate) fn apply(p: u8, x: i64) -> i64 {
        const MAX: i64 = i64::MAX;
        let mut m = i64::from(p & 0xF);
        let mut e = i32::from(p >> 4);
        if e > 0 {
            e -= 1;
            m += 0x10;
        }
        e -= 7;
        if e >= 0 {
            if x < (MAX / 0x1F) >> e { (x * m) << e } else { MAX }
        } else {
            let e = -e;
            if x < MAX / 0x1F {
                (x * m) >> e
            } else if (x >> e) < MAX / 0x1F {
                (x >> e) * m
            } else {
                MAX
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_default_pause_250_survives_encoding() {
            assert_eq!(decode(encode(250)), 250);
            assert_eq!(decode(encode(100)), 100);
        }

        #[test]
        fn encoding_is_monotonic_and_within_a_sixteenth() {
            let mut last = 0;
            for percent in 0..=396_800u32 {
                let value = decode(encode(percent));
                assert!(value >= last, "monotonic at {percent}");
                let error = (value - i64::from(percent)).abs();
                assert!(error * 16 <= i64::from(percent).max(16), "{percent} stored as {value}");
                last = value;
            }
            assert_eq!(decode(encode(1_000_000)), 396_800, "beyond the range: the maximum");
        }
    }
}
