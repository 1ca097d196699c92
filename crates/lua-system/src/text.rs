//! A short byte string stored inline: messages and host names.
//!
//! Replies cross the Lua boundary by value. Lua reports errors (out of memory, for instance) by
//! `longjmp`, which must never skip a Rust destructor, so everything a reply carries is `Copy`:
//! no `String`, no `Box`. Lua strings are bytes, so a `Text` is bytes too (a host name is
//! returned as the kernel gives it, UTF-8 or not). Text longer than the buffer is cut; text
//! formatted with [`text!`] is cut at a character boundary.

use std::fmt;

const CAPACITY: usize = 256;

/// An inline, `Copy` byte string of at most 256 bytes.
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

    /// The first 256 bytes of `bytes`, as they are.
    pub fn from_bytes(bytes: &[u8]) -> Text {
        let mut text = Text::default();
        let len = bytes.len().min(CAPACITY);
        text.buf[..len].copy_from_slice(&bytes[..len]);
        text.len = len as u16;
        text
    }

    /// The text's bytes, as Lua gets them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// The text as UTF-8, invalid sequences replaced (for Rust callers and logs).
    pub fn to_string_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
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
        f.write_str(&self.to_string_lossy())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.to_string_lossy(), f)
    }
}

impl std::error::Error for Text {}

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
        assert!(t.as_bytes().len() <= CAPACITY);
        assert!(t.to_string_lossy().chars().all(|c| c == 'é'));
    }

    #[test]
    fn short_text_round_trips() {
        assert_eq!(text!("bad argument #{} to '{}'", 1, "gc").as_bytes(), b"bad argument #1 to 'gc'");
    }

    #[test]
    fn bytes_are_kept_as_they_are() {
        let raw = [b'h', 0xff, b'o', 0xc3];
        assert_eq!(Text::from_bytes(&raw).as_bytes(), &raw);
    }
}
