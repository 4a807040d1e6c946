//! XDR (RFC 4506), the subset the secure feed uses: int, uint, enum (i32), hyper (i64),
//! double, and variable-length opaque (u32 length, bytes, zero padding to 4). Lengths are
//! strict (an opaque never reaches past the buffer, a message never has bytes left over);
//! padding bytes are skipped without looking at them, as the real client does, and written as
//! zeros.

/// Why XDR input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdrError {
    /// The input ended inside a value.
    Truncated,
    /// An opaque longer than allowed.
    TooLong,
    /// Bytes left after the last field.
    Trailing,
    /// A value out of its range (an unknown enum member, a key of the wrong size).
    Invalid(&'static str),
}

impl std::fmt::Display for XdrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XdrError::Truncated => write!(f, "XDR input ends inside a value"),
            XdrError::TooLong => write!(f, "XDR opaque over its limit"),
            XdrError::Trailing => write!(f, "bytes after the last XDR field"),
            XdrError::Invalid(what) => write!(f, "invalid XDR value: {what}"),
        }
    }
}

impl std::error::Error for XdrError {}

/// Writes XDR into a caller-owned buffer.
#[derive(Debug, Default)]
pub struct XdrWriter {
    /// What was written.
    pub buf: Vec<u8>,
}

impl XdrWriter {
    /// An empty writer.
    pub fn new() -> Self {
        XdrWriter::default()
    }

    /// A signed 32-bit int (also enums).
    pub fn int(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An unsigned 32-bit int.
    pub fn uint(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A hyper (signed 64-bit).
    pub fn hyper(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A double (IEEE 754, big-endian).
    pub fn double(&mut self, v: f64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
        self
    }

    /// Variable-length opaque: length, bytes, zeros to a multiple of 4.
    pub fn opaque(&mut self, v: &[u8]) -> &mut Self {
        self.uint(v.len() as u32);
        self.buf.extend_from_slice(v);
        let pad = (4 - v.len() % 4) % 4;
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self
    }

    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads XDR from a byte slice.
#[derive(Debug)]
pub struct XdrReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> XdrReader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        XdrReader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let end = self.pos.checked_add(n).ok_or(XdrError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(XdrError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn word(&mut self) -> Result<[u8; 4], XdrError> {
        let mut w = [0u8; 4];
        w.copy_from_slice(self.take(4)?);
        Ok(w)
    }

    /// A signed 32-bit int.
    pub fn int(&mut self) -> Result<i32, XdrError> {
        Ok(i32::from_be_bytes(self.word()?))
    }

    /// An unsigned 32-bit int.
    pub fn uint(&mut self) -> Result<u32, XdrError> {
        Ok(u32::from_be_bytes(self.word()?))
    }

    /// A hyper.
    pub fn hyper(&mut self) -> Result<i64, XdrError> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(w))
    }

    /// A double.
    pub fn double(&mut self) -> Result<f64, XdrError> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(f64::from_bits(u64::from_be_bytes(w)))
    }

    /// Variable-length opaque of at most `max` bytes (its padding must be there; its value is
    /// not checked).
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], XdrError> {
        let n = self.uint()? as usize;
        if n > max {
            return Err(XdrError::TooLong);
        }
        let padded = n.checked_add(3).ok_or(XdrError::TooLong)? / 4 * 4;
        let v = self.take(padded)?;
        Ok(&v[..n])
    }

    /// Whether everything was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Fails if bytes are left.
    pub fn done(&self) -> Result<(), XdrError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(XdrError::Trailing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_with_padding() {
        let mut w = XdrWriter::new();
        w.int(-1)
            .uint(7)
            .hyper(-1)
            .double(1.5)
            .opaque(b"abcde")
            .opaque(b"");
        let b = w.finish();
        assert_eq!(&b[8..16], &[0xff; 8], "hyper -1");
        assert_eq!(b.len(), 4 + 4 + 8 + 8 + 4 + 8 + 4);
        let mut r = XdrReader::new(&b);
        assert_eq!(r.int(), Ok(-1));
        assert_eq!(r.uint(), Ok(7));
        assert_eq!(r.hyper(), Ok(-1));
        assert_eq!(r.double(), Ok(1.5));
        assert_eq!(r.opaque(5), Ok(&b"abcde"[..]));
        assert_eq!(r.opaque(0), Ok(&b""[..]));
        assert_eq!(r.done(), Ok(()));
    }

    #[test]
    fn strict_lengths_and_ignored_padding() {
        // Padding bytes that are not zero are skipped, as the real client does.
        let b = [0, 0, 0, 1, b'x', 9, 9, 9];
        assert_eq!(XdrReader::new(&b).opaque(4), Ok(&b"x"[..]));
        // Missing padding, a length past the end, over the limit, a huge length.
        assert_eq!(XdrReader::new(&b[..5]).opaque(4), Err(XdrError::Truncated));
        assert_eq!(
            XdrReader::new(&[0, 0, 0, 9, 1]).opaque(16),
            Err(XdrError::Truncated)
        );
        assert_eq!(XdrReader::new(&b).opaque(0), Err(XdrError::TooLong));
        assert_eq!(
            XdrReader::new(&[0xff, 0xff, 0xff, 0xff]).opaque(usize::MAX),
            Err(XdrError::Truncated)
        );
        let mut r = XdrReader::new(&[0, 0, 0, 1, 0]);
        assert_eq!(r.int(), Ok(1));
        assert_eq!(r.done(), Err(XdrError::Trailing));
        assert_eq!(XdrReader::new(&[0, 0, 1]).int(), Err(XdrError::Truncated));
    }
}
