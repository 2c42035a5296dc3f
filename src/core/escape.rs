//! Bytes as one printable line, for logs, errors and INFO: printable ASCII as is, a backslash
//! as `\\`, every other byte as `\xNN`. Our own rule rather than `<[u8]>::escape_ascii`, which
//! also escapes quotes and writes `\n`: the log lines and errors stay what they have always
//! been. Inside quotes (key masks in INFO) a `"` is written `\"`.

use std::fmt;

/// `bytes`, escaped.
pub fn escape(bytes: &[u8]) -> String {
    Escaped::plain(bytes).to_string()
}

/// Bytes that display escaped.
pub struct Escaped<'a> {
    bytes: &'a [u8],
    quoted: bool,
}

impl<'a> Escaped<'a> {
    pub fn plain(bytes: &'a [u8]) -> Escaped<'a> {
        Escaped {
            bytes,
            quoted: false,
        }
    }

    /// For display between double quotes: `"` is escaped too.
    pub fn quoted(bytes: &'a [u8]) -> Escaped<'a> {
        Escaped {
            bytes,
            quoted: true,
        }
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for &b in self.bytes {
            match b {
                b'\\' => f.write_str("\\\\")?,
                b'"' if self.quoted => f.write_str("\\\"")?,
                0x20..=0x7e => f.write_char(char::from(b))?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_stays_the_rest_is_hex() {
        assert_eq!(escape(b"user:1 \"a\" 'b'"), "user:1 \"a\" 'b'");
        assert_eq!(escape(b"a\\b\n\0\xff\x7f"), "a\\\\b\\x0a\\x00\\xff\\x7f");
        assert_eq!(
            Escaped::quoted(b"say \"hi\"\\").to_string(),
            "say \\\"hi\\\"\\\\"
        );
    }
}
