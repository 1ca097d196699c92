//! A short string stored inline: error messages and hostnames.
//!
//! Replies cross the Lua boundary by value. Lua reports errors (out of memory, for instance) by
//! `longjmp`, which must never skip a Rust destructor, so everything a reply carries is `Copy`:
//! no `String`, no `Box`. Text longer than the buffer is cut at a character boundary.

use std::fmt;

const CAPACITY: usize = 256;

/// An inline, `Copy` UTF-8 string of at most 256 bytes.
#[derive(Clone, Copy)]
pub struct Text {
    len: u16,
    buf: [u8; CAPACITY],
}

impl Text {
    /// Formats `args`, cutting what does not fit.
    pub fn format(args: fmt::Arguments<'_>) -> Text {
        let mut text = Text::default();
        // Our `write_str` never fails: it truncates instead.
        let _ = fmt::write(&mut text, args);
        text
    }

    pub fn as_str(&self) -> &str {
        // `write_str` only ever appends whole characters, so this never fails.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl Default for Text {
    fn default() -> Self {
        Text { len: 0, buf: [0; CAPACITY] }
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let used = self.len as usize;
        let room = CAPACITY - used;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[used..used + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len = (used + take) as u16;
        Ok(())
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Text {}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// `text!("...", args)`: a [`Text`] built like `format!`.
macro_rules! text {
    ($($arg:tt)*) => { $crate::text::Text::format(format_args!($($arg)*)) };
}
pub(crate) use text;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let t = text!("{long}");
        assert!(t.as_str().len() <= CAPACITY);
        assert!(t.as_str().chars().all(|c| c == 'é'));
    }

    #[test]
    fn short_text_round_trips() {
        assert_eq!(text!("bad argument #{} to '{}'", 1, "gc").as_str(), "bad argument #1 to 'gc'");
    }
}
