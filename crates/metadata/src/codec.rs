//! A small, bounded binary codec for metadata records and snapshots (big-endian, length-prefixed).
//!
//! Every read is checked against the remaining input: a truncated or garbled buffer yields a
//! [`DecodeError`], never a panic and never an allocation larger than the input itself.

use thiserror::Error;
use uuid::Uuid;

/// A metadata record or snapshot could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("truncated input: needed {needed} bytes, {remaining} left")]
    Truncated {
        /// Bytes the next value needs.
        needed: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A string was not valid UTF-8.
    #[error("invalid UTF-8 in a string field")]
    InvalidUtf8,
    /// A tag, version or length had a value this code does not know.
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// Appends big-endian values to a byte buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self { buf: Vec::new() }
    }
    pub(crate) fn into_inner(self) -> Vec<u8> {
        self.buf
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }
    pub(crate) fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn uuid(&mut self, v: Uuid) {
        self.buf.extend_from_slice(v.as_bytes());
    }
    /// A string: u32 length then UTF-8 bytes.
    pub(crate) fn str(&mut self, v: &str) {
        self.len(v.len());
        self.buf.extend_from_slice(v.as_bytes());
    }
    /// An optional string: a presence byte then the string.
    pub(crate) fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    pub(crate) fn len(&mut self, n: usize) {
        // Metadata values are far below 4 GiB; saturate rather than wrap if one ever is not.
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    pub(crate) fn i32_array(&mut self, v: &[i32]) {
        self.len(v.len());
        for x in v {
            self.i32(*x);
        }
    }
}

/// Reads big-endian values from a byte slice with bounds checks.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                needed: n,
                remaining: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::Invalid(format!("boolean byte {b}"))),
        }
    }
    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        Ok(Uuid::from_bytes(self.array()?))
    }
    /// A length that must fit in the remaining input given `min_item_bytes` per item.
    pub(crate) fn len(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        let needed = n.saturating_mul(min_item_bytes.max(1));
        if needed > self.buf.len() {
            return Err(DecodeError::Truncated {
                needed,
                remaining: self.buf.len(),
            });
        }
        Ok(n)
    }
    pub(crate) fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.len(1)?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
    }
    pub(crate) fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            b => Err(DecodeError::Invalid(format!("option tag {b}"))),
        }
    }
    pub(crate) fn i32_array(&mut self) -> Result<Vec<i32>, DecodeError> {
        let n = self.len(4)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.i32()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_values() {
        let mut w = Writer::new();
        w.u8(7);
        w.bool(true);
        w.i32(-70000);
        w.u64(1 << 40);
        w.str("héllo");
        w.opt_str(None);
        w.opt_str(Some(""));
        w.i32_array(&[1, -1, 3]);
        let id = Uuid::from_u128(0x1234);
        w.uuid(id);
        let buf = w.into_inner();
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.i32(), Ok(-70000));
        assert_eq!(r.u64(), Ok(1 << 40));
        assert_eq!(r.str().as_deref(), Ok("héllo"));
        assert_eq!(r.opt_str(), Ok(None));
        assert_eq!(r.opt_str(), Ok(Some(String::new())));
        assert_eq!(r.i32_array(), Ok(vec![1, -1, 3]));
        assert_eq!(r.uuid(), Ok(id));
        assert!(r.is_empty());
    }

    #[test]
    fn huge_array_count_is_an_error_not_an_allocation() {
        let buf = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1];
        let mut r = Reader::new(&buf);
        assert!(matches!(r.i32_array(), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn truncated_string_is_an_error() {
        let buf = [0, 0, 0, 5, b'a'];
        assert!(Reader::new(&buf).str().is_err());
    }
}
