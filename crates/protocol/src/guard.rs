//! The request guard: walks a request's bytes against Kafka's message schema, without allocating, before
//! `kafka-protocol` decodes them.
//!
//! Why: `kafka-protocol` 0.18 sizes vectors from the array count read off the wire
//! (`Vec::with_capacity(count)`), so a few-byte request claiming 2^31 elements aborts the process on the
//! failed allocation. The guard walks every field the schema defines at the request's version and refuses
//! any length or count that the remaining bytes cannot hold (an array of `n` elements whose smallest
//! encoding is `m` bytes needs `n * m` bytes, and `n` may never exceed the remaining bytes even when `m` is
//! zero). A request the guard accepts decodes with every vector bounded by the frame size, and the walk
//! and the decoder agree on where each field starts: known tagged fields must fill exactly their declared
//! size, and the body must end exactly at the end of the frame.
//!
//! The per-API walkers live in `guard_generated.rs`, generated from Kafka's JSON message schemas by
//! `crates/protocol/gen/` (see `docs/protocol.md`); this file holds the primitive readers they call.

use kafka_protocol::messages::ApiKey;

use crate::guard_generated;

/// Where and why the guard refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset} (field {field})")]
pub struct GuardError {
    /// Offset in the frame (after the size prefix) where the offending field starts.
    pub offset: usize,
    /// The schema name of the field being read.
    pub field: &'static str,
    /// What was wrong.
    pub kind: GuardErrorKind,
}

/// The kinds of defect the guard finds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardErrorKind {
    /// The field needs more bytes than remain.
    #[error("truncated: needs {needed_bytes} bytes, {remaining_bytes} remain")]
    Truncated {
        /// Bytes the field needs.
        needed_bytes: u64,
        /// Bytes left in the frame (or in the enclosing tagged field).
        remaining_bytes: usize,
    },
    /// A length or count below -1, or -1 where the field is not nullable at this version.
    #[error("invalid length {len}")]
    InvalidLength {
        /// The length or count as read (compact forms are shown minus one, as the wire means them).
        len: i64,
    },
    /// An array count larger than the remaining bytes can hold.
    #[error("array count {count} cannot fit: elements take at least {min_element_bytes} bytes, {remaining_bytes} remain")]
    CountTooLarge {
        /// The element count read.
        count: u64,
        /// Smallest encoding of one element at this version.
        min_element_bytes: usize,
        /// Bytes left.
        remaining_bytes: usize,
    },
    /// An unsigned varint longer than 5 bytes or larger than `u32::MAX`.
    #[error("invalid unsigned varint")]
    InvalidVarint,
    /// A known tagged field whose content does not fill exactly its declared size.
    #[error(
        "tagged field {tag} declares {size_bytes} bytes but its content takes {consumed_bytes}"
    )]
    TaggedFieldSize {
        /// The tag.
        tag: u32,
        /// The declared size.
        size_bytes: usize,
        /// The bytes its content used.
        consumed_bytes: usize,
    },
    /// The collections the decoder would allocate exceed the decode budget
    /// ([`DECODE_BUDGET_BASE_BYTES`] plus [`DECODE_BUDGET_PER_FRAME_BYTE`] per frame byte).
    #[error("decoding {count} elements of {element_size_bytes} bytes would exceed the remaining decode budget of {budget_bytes} bytes")]
    DecodeBudgetExceeded {
        /// Elements in the collection.
        count: usize,
        /// In-memory size of one element.
        element_size_bytes: usize,
        /// Budget left when the collection was met.
        budget_bytes: usize,
    },
    /// Bytes left over after the last field.
    #[error("{count} trailing bytes")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The schema does not define this version (or this API key).
    #[error("no schema for version {api_version}")]
    UnknownSchema {
        /// The version asked for.
        api_version: i16,
    },
}

/// Checks a request frame (header and body, without the size prefix) for `api_key` at `api_version`.
/// The header version is the one `kafka-protocol` uses for that API and version.
///
/// Bytes after the body are allowed, as Apache Kafka allows them: its request parsers read the fields
/// they know and never check that the buffer was consumed. librdkafka 2.12.1 depends on it: its
/// all-topics Metadata request (v9+) leaves a 4-byte array-count placeholder in place after the null
/// compact array (librdkafka issue #5049), so the body ends 3 bytes before the frame does. The decoder
/// reads exactly what the walk checked, so what follows cannot reach it.
pub fn check_request(api_key: ApiKey, api_version: i16, frame: &[u8]) -> Result<(), GuardError> {
    let header_version = api_key.request_header_version(api_version);
    let mut w = Walker::new(frame);
    guard_generated::walk_request_header(&mut w, header_version)?;
    guard_generated::walk_request_body(&mut w, api_key as i16, api_version)
}

/// What [`check_response`] found in a well-formed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCheck {
    /// Tagged fields present anywhere in the response (header and body, nested structs included).
    pub tagged_fields: usize,
}

/// Checks a whole response frame (header and body, without the size prefix) of `api_key` at
/// `api_version` the same way [`check_request`] checks requests. Sluice uses it in tests to prove that
/// no tagged field holding its default value is ever emitted; a client decoding responses from
/// another broker can use it as its pre-decode guard.
pub fn check_response(
    api_key: ApiKey,
    api_version: i16,
    frame: &[u8],
) -> Result<ResponseCheck, GuardError> {
    let header_version = api_key.response_header_version(api_version);
    let mut w = Walker::new(frame);
    guard_generated::walk_response_header(&mut w, header_version)?;
    guard_generated::walk_response_body(&mut w, api_key as i16, api_version)?;
    w.finish("response")?;
    Ok(ResponseCheck {
        tagged_fields: w.tagged_fields_seen,
    })
}

/// The request versions of `api_key` that `kafka-protocol`'s decoder accepts, as `(min, max)`; `None`
/// for an API key it does not know. This is the message type's own range, which for InitProducerId,
/// OffsetCommit and OffsetFetch is one version narrower than `ApiKey::valid_versions` in 0.18.
pub fn decodable_request_versions(api_key: i16) -> Option<(i16, i16)> {
    guard_generated::request_versions(api_key)
}

/// The response versions of `api_key` that `kafka-protocol`'s encoder accepts, as `(min, max)`.
pub fn encodable_response_versions(api_key: i16) -> Option<(i16, i16)> {
    guard_generated::response_versions(api_key)
}

/// A cursor over the bytes being checked. It only moves forward and never allocates.
///
/// `buf` ends where the enclosing scope ends (the frame, or a tagged field's declared size), so every
/// bound check is against the innermost limit, while `pos` stays an offset into the frame.
#[derive(Debug)]
pub(crate) struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Heap bytes the decoder may still allocate for collections before the request is refused.
    budget_bytes: usize,
    /// Tagged fields met so far (known and unknown).
    tagged_fields_seen: usize,
}

/// Collection memory every request may decode into, on top of [`DECODE_BUDGET_PER_FRAME_BYTE`] per
/// frame byte. The largest legitimate requests (a follower Fetch or an OffsetCommit over 100k
/// partitions) decode to a few MiB of vectors.
pub const DECODE_BUDGET_BASE_BYTES: usize = 64 * 1024 * 1024;

/// Collection memory allowed per byte of frame, on top of [`DECODE_BUDGET_BASE_BYTES`].
pub const DECODE_BUDGET_PER_FRAME_BYTE: usize = 2;

/// Heap charged for each unknown tagged field, which `kafka-protocol` keeps in a `BTreeMap<i32, Bytes>`
/// (a 40-byte entry plus its share of a B-tree node).
const UNKNOWN_TAGGED_FIELD_COST_BYTES: usize = 64;

impl<'a> Walker<'a> {
    /// A walker over a whole frame.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        let budget_bytes = DECODE_BUDGET_BASE_BYTES
            .saturating_add(buf.len().saturating_mul(DECODE_BUDGET_PER_FRAME_BYTE));
        Walker {
            buf,
            pos: 0,
            budget_bytes,
            tagged_fields_seen: 0,
        }
    }

    /// Charges `count` elements of `element_size_bytes` each against the decode budget.
    fn charge(
        &mut self,
        field: &'static str,
        start: usize,
        count: usize,
        element_size_bytes: usize,
    ) -> Result<(), GuardError> {
        match count.checked_mul(element_size_bytes) {
            Some(bytes) if bytes <= self.budget_bytes => {
                self.budget_bytes -= bytes;
                Ok(())
            }
            _ => Err(GuardError {
                offset: start,
                field,
                kind: GuardErrorKind::DecodeBudgetExceeded {
                    count,
                    element_size_bytes,
                    budget_bytes: self.budget_bytes,
                },
            }),
        }
    }

    /// Bytes left before the end of the current scope.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn err(&self, field: &'static str, kind: GuardErrorKind) -> GuardError {
        GuardError {
            offset: self.pos,
            field,
            kind,
        }
    }

    /// Fails unless the scope has been consumed exactly.
    pub(crate) fn finish(&self, field: &'static str) -> Result<(), GuardError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(self.err(field, GuardErrorKind::TrailingBytes { count })),
        }
    }

    /// The error for a struct asked to walk a version its schema does not define.
    pub(crate) fn unknown_schema(&self, field: &'static str, version: i16) -> GuardError {
        self.err(
            field,
            GuardErrorKind::UnknownSchema {
                api_version: version,
            },
        )
    }

    /// The presence byte of a nullable struct: the struct follows when it is 1 (any other value means
    /// null, as `kafka-protocol` reads it).
    pub(crate) fn option_present(&mut self, field: &'static str) -> Result<bool, GuardError> {
        self.take::<1>(field).map(|[b]| b == 1)
    }

    /// Skips a fixed-width field (int8..int64, float64, bool, uuid) or `n_bytes` of content.
    pub(crate) fn skip(&mut self, field: &'static str, n_bytes: u64) -> Result<(), GuardError> {
        let remaining = self.remaining();
        match usize::try_from(n_bytes) {
            Ok(n) if n <= remaining => {
                self.pos += n;
                Ok(())
            }
            _ => Err(self.err(
                field,
                GuardErrorKind::Truncated {
                    needed_bytes: n_bytes,
                    remaining_bytes: remaining,
                },
            )),
        }
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], GuardError> {
        let start = self.pos;
        self.skip(field, N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[start..start + N]);
        Ok(out)
    }

    fn read_i16(&mut self, field: &'static str) -> Result<i16, GuardError> {
        self.take::<2>(field).map(i16::from_be_bytes)
    }

    fn read_i32(&mut self, field: &'static str) -> Result<i32, GuardError> {
        self.take::<4>(field).map(i32::from_be_bytes)
    }

    /// Reads an unsigned varint as Kafka writes it: at most 5 bytes, value at most `u32::MAX`.
    pub(crate) fn uvarint(&mut self, field: &'static str) -> Result<u32, GuardError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..5 {
            let [b] = self.take::<1>(field)?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| GuardError {
                    offset: start,
                    field,
                    kind: GuardErrorKind::InvalidVarint,
                });
            }
        }
        Err(GuardError {
            offset: start,
            field,
            kind: GuardErrorKind::InvalidVarint,
        })
    }

    /// Checks a length-prefixed content of `len` bytes (`-1` = null) and skips it.
    fn content(
        &mut self,
        field: &'static str,
        start: usize,
        len: i64,
        nullable: bool,
    ) -> Result<(), GuardError> {
        if len == -1 && nullable {
            return Ok(());
        }
        if len < 0 {
            return Err(GuardError {
                offset: start,
                field,
                kind: GuardErrorKind::InvalidLength { len },
            });
        }
        // `len` is non-negative here, so the conversion is lossless.
        self.skip(field, len.unsigned_abs())
    }

    /// A `string` (int16 length) field.
    pub(crate) fn string(&mut self, field: &'static str, nullable: bool) -> Result<(), GuardError> {
        let start = self.pos;
        let len = self.read_i16(field)?;
        self.content(field, start, i64::from(len), nullable)
    }

    /// A compact string (unsigned varint length + 1) field.
    pub(crate) fn compact_string(
        &mut self,
        field: &'static str,
        nullable: bool,
    ) -> Result<(), GuardError> {
        let start = self.pos;
        let len = i64::from(self.uvarint(field)?) - 1;
        self.content(field, start, len, nullable)
    }

    /// A `bytes` or `records` (int32 length) field.
    pub(crate) fn bytes(&mut self, field: &'static str, nullable: bool) -> Result<(), GuardError> {
        let start = self.pos;
        let len = self.read_i32(field)?;
        self.content(field, start, i64::from(len), nullable)
    }

    /// A compact `bytes` or `records` (unsigned varint length + 1) field.
    pub(crate) fn compact_bytes(
        &mut self,
        field: &'static str,
        nullable: bool,
    ) -> Result<(), GuardError> {
        let start = self.pos;
        let len = i64::from(self.uvarint(field)?) - 1;
        self.content(field, start, len, nullable)
    }

    /// Checks an element count against the remaining bytes and returns it (0 for null).
    fn count(
        &mut self,
        field: &'static str,
        start: usize,
        count: i64,
        nullable: bool,
        min_element_bytes: usize,
    ) -> Result<usize, GuardError> {
        if count == -1 && nullable {
            return Ok(0);
        }
        if count < 0 {
            return Err(GuardError {
                offset: start,
                field,
                kind: GuardErrorKind::InvalidLength { len: count },
            });
        }
        let remaining_bytes = self.remaining();
        let fits = usize::try_from(count).ok().filter(|&n| {
            n <= remaining_bytes
                && n.checked_mul(min_element_bytes)
                    .is_some_and(|total| total <= remaining_bytes)
        });
        fits.ok_or(GuardError {
            offset: start,
            field,
            kind: GuardErrorKind::CountTooLarge {
                count: count.unsigned_abs(),
                min_element_bytes,
                remaining_bytes,
            },
        })
    }

    /// An array (int32 count) header; returns the element count the caller then walks. The decoder
    /// will allocate `count * element_size_bytes`, which is charged against the decode budget.
    pub(crate) fn array(
        &mut self,
        field: &'static str,
        nullable: bool,
        min_element_bytes: usize,
        element_size_bytes: usize,
    ) -> Result<usize, GuardError> {
        let start = self.pos;
        let count = self.read_i32(field)?;
        let n = self.count(field, start, i64::from(count), nullable, min_element_bytes)?;
        self.charge(field, start, n, element_size_bytes)?;
        Ok(n)
    }

    /// A compact array (unsigned varint count + 1) header; returns the element count.
    pub(crate) fn compact_array(
        &mut self,
        field: &'static str,
        nullable: bool,
        min_element_bytes: usize,
        element_size_bytes: usize,
    ) -> Result<usize, GuardError> {
        let start = self.pos;
        let count = i64::from(self.uvarint(field)?) - 1;
        let n = self.count(field, start, count, nullable, min_element_bytes)?;
        self.charge(field, start, n, element_size_bytes)?;
        Ok(n)
    }

    /// The tagged-field section of a flexible struct. `known` walks the content of a tag this schema
    /// defines at this version and returns `Ok(true)`, or returns `Ok(false)` for a tag to skip. A known
    /// field must fill exactly its declared size, so that a decoder reading it from the stream (as
    /// `kafka-protocol` does) lands where the walk did.
    pub(crate) fn tagged_fields<F>(
        &mut self,
        field: &'static str,
        mut known: F,
    ) -> Result<(), GuardError>
    where
        F: FnMut(&mut Walker<'a>, u32) -> Result<bool, GuardError>,
    {
        let start = self.pos;
        let n_fields = self.uvarint(field)?;
        // Each tagged field takes at least two bytes (tag and size).
        self.count(field, start, i64::from(n_fields), false, 2)?;
        for _ in 0..n_fields {
            let tag = self.uvarint(field)?;
            let size_bytes = self.uvarint(field)? as usize;
            let content_start = self.pos;
            self.skip(field, size_bytes as u64)?;
            let content_end = self.pos;
            let mut inner = Walker {
                buf: &self.buf[..content_end],
                pos: content_start,
                budget_bytes: self.budget_bytes,
                tagged_fields_seen: 0,
            };
            self.tagged_fields_seen += 1;
            let is_known = known(&mut inner, tag)?;
            self.budget_bytes = inner.budget_bytes;
            self.tagged_fields_seen += inner.tagged_fields_seen;
            if !is_known {
                self.charge(field, content_start, 1, UNKNOWN_TAGGED_FIELD_COST_BYTES)?;
            } else if inner.pos != content_end {
                return Err(GuardError {
                    offset: content_start,
                    field,
                    kind: GuardErrorKind::TaggedFieldSize {
                        tag,
                        size_bytes,
                        consumed_bytes: inner.pos - content_start,
                    },
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(r: Result<impl std::fmt::Debug, GuardError>) -> GuardErrorKind {
        r.expect_err("must be refused").kind
    }

    #[test]
    fn varints_follow_kafkas_limits() {
        assert_eq!(Walker::new(&[0x00]).uvarint("f"), Ok(0));
        assert_eq!(Walker::new(&[0x7f]).uvarint("f"), Ok(127));
        assert_eq!(Walker::new(&[0x80, 0x01]).uvarint("f"), Ok(128));
        assert_eq!(
            Walker::new(&[0xff, 0xff, 0xff, 0xff, 0x0f]).uvarint("f"),
            Ok(u32::MAX)
        );
        // Above u32::MAX, and longer than five bytes.
        assert_eq!(
            kind(Walker::new(&[0xff, 0xff, 0xff, 0xff, 0x1f]).uvarint("f")),
            GuardErrorKind::InvalidVarint
        );
        assert_eq!(
            kind(Walker::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).uvarint("f")),
            GuardErrorKind::InvalidVarint
        );
        assert!(matches!(
            kind(Walker::new(&[0x80]).uvarint("f")),
            GuardErrorKind::Truncated { .. }
        ));
    }

    #[test]
    fn lengths_are_checked_against_remaining_bytes_and_nullability() {
        // int16 string: -1 only when nullable, never below -1, never longer than what remains.
        assert_eq!(Walker::new(&[0xff, 0xff]).string("s", true), Ok(()));
        assert_eq!(
            kind(Walker::new(&[0xff, 0xff]).string("s", false)),
            GuardErrorKind::InvalidLength { len: -1 }
        );
        assert_eq!(
            kind(Walker::new(&[0xff, 0xfe]).string("s", true)),
            GuardErrorKind::InvalidLength { len: -2 }
        );
        assert!(matches!(
            kind(Walker::new(&[0x00, 0x03, b'a']).string("s", false)),
            GuardErrorKind::Truncated {
                needed_bytes: 3,
                remaining_bytes: 1
            }
        ));
        // Compact forms: 0 is null, n is n - 1 bytes.
        assert_eq!(Walker::new(&[0x00]).compact_string("s", true), Ok(()));
        assert_eq!(
            kind(Walker::new(&[0x00]).compact_bytes("s", false)),
            GuardErrorKind::InvalidLength { len: -1 }
        );
        assert_eq!(Walker::new(&[0x03, 1, 2]).compact_bytes("s", false), Ok(()));
        assert_eq!(
            kind(Walker::new(&[0x80, 0x80, 0x80, 0x80, 0x08]).compact_bytes("s", false)),
            GuardErrorKind::Truncated {
                needed_bytes: (1u64 << 31) - 1,
                remaining_bytes: 0
            }
        );
        // int32 bytes, i32::MIN.
        assert_eq!(
            kind(Walker::new(&[0x80, 0, 0, 0]).bytes("b", true)),
            GuardErrorKind::InvalidLength {
                len: i64::from(i32::MIN)
            }
        );
    }

    #[test]
    fn array_counts_need_room_for_their_smallest_elements() {
        let huge = [0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(matches!(
            kind(Walker::new(&huge).array("a", false, 0, 8)),
            GuardErrorKind::CountTooLarge {
                count: 2_147_483_647,
                ..
            }
        ));
        // Two elements of at least 4 bytes need 8 bytes; 7 are not enough.
        let two = [0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7];
        assert!(matches!(
            kind(Walker::new(&two).array("a", false, 4, 4)),
            GuardErrorKind::CountTooLarge {
                count: 2,
                min_element_bytes: 4,
                remaining_bytes: 7
            }
        ));
        assert_eq!(Walker::new(&two).array("a", false, 3, 4), Ok(2));
        assert_eq!(
            Walker::new(&[0xff, 0xff, 0xff, 0xff]).array("a", true, 4, 4),
            Ok(0)
        );
        assert_eq!(
            kind(Walker::new(&[0xff, 0xff, 0xff, 0xff]).array("a", false, 4, 4)),
            GuardErrorKind::InvalidLength { len: -1 }
        );
        // Zero-sized elements still may not outnumber the remaining bytes.
        assert!(matches!(
            kind(Walker::new(&[0, 0, 0, 5, 0, 0]).array("a", false, 0, 8)),
            GuardErrorKind::CountTooLarge { .. }
        ));
    }

    #[test]
    fn collections_are_charged_against_the_decode_budget() {
        let mut w = Walker::new(&[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        w.budget_bytes = 100;
        assert!(matches!(
            kind(w.array("a", false, 4, 64)),
            GuardErrorKind::DecodeBudgetExceeded {
                count: 2,
                element_size_bytes: 64,
                budget_bytes: 100
            }
        ));
        let mut w = Walker::new(&[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        w.budget_bytes = 128;
        assert_eq!(w.array("a", false, 4, 64), Ok(2));
        assert_eq!(w.budget_bytes, 0);
    }

    #[test]
    fn known_tagged_fields_must_fill_their_declared_size() {
        // One tagged field, tag 0, size 3, holding a compact string of 1 byte ("a") plus a stray byte.
        let frame = [1, 0, 3, 2, b'a', 0xee];
        let mut w = Walker::new(&frame);
        let r = w.tagged_fields("t", |w, tag| {
            assert_eq!(tag, 0);
            w.compact_string("s", false)?;
            Ok(true)
        });
        assert_eq!(
            kind(r),
            GuardErrorKind::TaggedFieldSize {
                tag: 0,
                size_bytes: 3,
                consumed_bytes: 2
            }
        );
        // The same bytes as an unknown tag are skipped whole.
        let mut w = Walker::new(&frame);
        assert_eq!(w.tagged_fields("t", |_, _| Ok(false)), Ok(()));
        assert_eq!(w.remaining(), 0);
        // A known field cannot read past its declared size into the next field.
        let frame = [1, 0, 1, 5, b'a', b'b', b'c', b'd'];
        let r = Walker::new(&frame).tagged_fields("t", |w, _| {
            w.compact_string("s", false)?;
            Ok(true)
        });
        assert!(matches!(kind(r), GuardErrorKind::Truncated { .. }));
        // More fields announced than bytes can hold.
        assert!(matches!(
            kind(Walker::new(&[0x7f, 0, 0]).tagged_fields("t", |_, _| Ok(false))),
            GuardErrorKind::CountTooLarge { .. }
        ));
    }
}
