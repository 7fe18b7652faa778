//! Frame bounds: every Kafka request and response is a 4-byte big-endian size followed by that many bytes.

use crate::error::FrameError;

/// Width of the size prefix in front of every frame.
pub const FRAME_SIZE_PREFIX_BYTES: usize = 4;

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const DEFAULT_SOCKET_REQUEST_MAX_BYTES: i32 = 100 * 1024 * 1024;

/// Checks a request frame's size prefix against `socket.request.max.bytes` and returns how many bytes to
/// read. Negative, zero and oversized frames are refused before any buffer is allocated for them.
///
/// ```
/// use sluice_protocol::frame::{check_frame_size, DEFAULT_SOCKET_REQUEST_MAX_BYTES};
/// assert_eq!(check_frame_size(12, DEFAULT_SOCKET_REQUEST_MAX_BYTES), Ok(12));
/// assert!(check_frame_size(-1, DEFAULT_SOCKET_REQUEST_MAX_BYTES).is_err());
/// ```
pub fn check_frame_size(size_bytes: i32, max_bytes: i32) -> Result<usize, FrameError> {
    if size_bytes < 0 {
        return Err(FrameError::NegativeSize { size_bytes });
    }
    if size_bytes == 0 {
        return Err(FrameError::Empty);
    }
    if size_bytes > max_bytes {
        return Err(FrameError::TooLarge {
            size_bytes,
            max_bytes,
        });
    }
    // A non-negative i32 always fits in usize on the 32- and 64-bit targets Sluice supports.
    usize::try_from(size_bytes).map_err(|_| FrameError::TooLarge {
        size_bytes,
        max_bytes,
    })
}

/// Reads the size prefix from the first 4 bytes of `buf` and checks it; `None` while fewer than 4 bytes
/// have arrived.
pub fn read_frame_size(buf: &[u8], max_bytes: i32) -> Option<Result<usize, FrameError>> {
    let prefix: [u8; FRAME_SIZE_PREFIX_BYTES] =
        buf.get(..FRAME_SIZE_PREFIX_BYTES)?.try_into().ok()?;
    Some(check_frame_size(i32::from_be_bytes(prefix), max_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(
            check_frame_size(-5, 100),
            Err(FrameError::NegativeSize { size_bytes: -5 })
        );
        assert_eq!(
            check_frame_size(i32::MIN, 100),
            Err(FrameError::NegativeSize {
                size_bytes: i32::MIN
            })
        );
        assert_eq!(check_frame_size(0, 100), Err(FrameError::Empty));
        assert_eq!(
            check_frame_size(101, 100),
            Err(FrameError::TooLarge {
                size_bytes: 101,
                max_bytes: 100
            })
        );
        assert_eq!(check_frame_size(100, 100), Ok(100));
        assert_eq!(check_frame_size(1, 100), Ok(1));
    }

    #[test]
    fn prefix_is_read_big_endian() {
        assert_eq!(read_frame_size(&[0, 0, 1], 1000), None);
        assert_eq!(read_frame_size(&[0, 0, 1, 0, 9], 1000), Some(Ok(256)));
        assert_eq!(
            read_frame_size(&[0xff, 0xff, 0xff, 0xff], 1000),
            Some(Err(FrameError::NegativeSize { size_bytes: -1 }))
        );
        assert_eq!(
            read_frame_size(&[0x7f, 0xff, 0xff, 0xff], DEFAULT_SOCKET_REQUEST_MAX_BYTES),
            Some(Err(FrameError::TooLarge {
                size_bytes: i32::MAX,
                max_bytes: DEFAULT_SOCKET_REQUEST_MAX_BYTES
            }))
        );
    }
}
