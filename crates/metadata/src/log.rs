//! The metadata log (`__cluster_metadata`): record batches appended to segment files with CRC32C framing,
//! fsynced on every append, plus snapshots of the image, replayed at start-up.
//!
//! Layout under the metadata dir:
//! - `meta.properties`: `cluster.id` and `node.id` (as Kafka's), written once.
//! - `__cluster_metadata/<base offset, 20 digits>.log`: segments. Each batch is one frame:
//!   `[length u32][crc32c u32][body]` with body `[version u8][base offset u64][count u32][records...]`;
//!   the CRC covers the body. One controller operation is one batch, so it is applied wholly or not at all.
//! - `__cluster_metadata/<last offset, 20 digits>.checkpoint`: a snapshot, `[magic 8][length u32][crc32c u32][image]`,
//!   written to a `.tmp` file, fsynced and renamed, so a snapshot is either whole or absent.
//!
//! Recovery loads the newest valid snapshot, replays the batches after it, and cuts a torn or corrupt tail
//! of the last segment (a crash mid-append); corruption anywhere else is an error, never silently skipped.
//! A later Raft quorum replaces [`FileMetadataLog`] behind the [`MetadataLog`] seam.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};
use crate::image::{MetadataDelta, MetadataImage, ReplayError};
use crate::record::MetadataRecord;

/// The directory holding segments and snapshots, inside the metadata dir. Not Kafka's `__cluster_metadata-0`:
/// the metadata dir defaults to the first of `log.dirs`, and a `<topic>-<partition>` name would make the
/// storage `LogManager` open it as a partition log and "recover" (truncate) our differently framed segments.
pub const LOG_DIR_NAME: &str = "__cluster_metadata";
const FRAME_HEADER_BYTES: usize = 8;
const BATCH_VERSION: u8 = 1;
const SNAPSHOT_MAGIC: &[u8; 8] = b"SLCSNAP1";
/// The largest frame recovery accepts; a length above it is treated as a torn or corrupt tail.
const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// The metadata log failed.
#[derive(Debug, Error)]
pub enum LogError {
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// Data that must be valid is not (not a torn tail of the last segment).
    #[error("corrupt metadata log {path} at byte {position}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The byte position of the bad frame.
        position: u64,
        /// Why it is bad.
        reason: String,
    },
    /// A record contradicts the image it is replayed on.
    #[error("metadata replay failed at offset {offset}: {source}")]
    Replay {
        /// The record's offset.
        offset: i64,
        /// The contradiction.
        source: ReplayError,
    },
    /// `meta.properties` belongs to another node or is unreadable.
    #[error("invalid meta.properties: {0}")]
    MetaProperties(String),
    /// Another broker (process or instance) holds the metadata log.
    #[error("{0} is locked by another broker using the same metadata dir")]
    Locked(PathBuf),
    /// An earlier append failed half-way and could not be undone; the process must restart to recover.
    #[error("the metadata log failed earlier and accepts no more appends")]
    Failed,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> LogError {
    let context = context.into();
    move |source| LogError::Io { context, source }
}

/// The seam between the controller and where its records go: a local file today, a Raft log later.
pub trait MetadataLog: Send {
    /// Appends `records` as one atomic batch, durable when this returns; returns the offset of the first record.
    fn append(&mut self, records: &[MetadataRecord]) -> Result<i64, LogError>;
    /// The offset the next record will get.
    fn next_offset(&self) -> i64;
    /// Called after `image` (which includes every appended record) is applied; may write a snapshot.
    fn maybe_snapshot(&mut self, image: &MetadataImage) -> Result<bool, LogError>;
}

/// What recovery found, for the start-up log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The offset of the snapshot loaded, if any.
    pub snapshot_offset: Option<i64>,
    /// Records replayed after the snapshot.
    pub records_replayed: u64,
    /// Bytes cut from a torn tail.
    pub truncated_bytes: u64,
}

/// Options for [`FileMetadataLog::open`].
#[derive(Debug, Clone)]
pub struct FileLogOptions {
    /// The metadata dir (`metadata.log.dir`).
    pub dir: PathBuf,
    /// This node's id, checked against `meta.properties`.
    pub node_id: i32,
    /// Write a snapshot after this many records since the last one (0 = never).
    pub snapshot_interval_records: u64,
    /// How long to wait for another instance to release the log's lock before failing (an in-process restart
    /// may briefly overlap the old instance's shutdown).
    pub lock_wait_ms: u64,
}

/// Takes an exclusive, non-blocking `flock` on `<dir>/.lock`, retrying for up to `wait_ms`. Two writers on one
/// metadata log would fork it; the lock is released when the file is closed, including by a crash.
pub fn lock_dir(dir: &Path, wait_ms: u64) -> Result<File, LogError> {
    use rustix::fs::{flock, FlockOperation};
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("open {}", path.display())))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                if std::time::Instant::now() >= deadline {
                    return Err(LogError::Locked(path));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(LogError::Io {
                    context: format!("lock {}", path.display()),
                    source: e.into(),
                })
            }
        }
    }
}

/// The file-backed metadata log.
#[derive(Debug)]
pub struct FileMetadataLog {
    /// Holds an exclusive `flock` on `.lock` for as long as the log is open.
    _lock: File,
    log_dir: PathBuf,
    active: File,
    active_path: PathBuf,
    active_len: u64,
    next_offset: i64,
    snapshot_offset: Option<i64>,
    snapshot_interval_records: u64,
    failed: bool,
}

fn segment_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

fn snapshot_name(offset: i64) -> String {
    format!("{offset:020}.checkpoint")
}

fn parse_offset(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("fsync directory {}", dir.display())))
}

/// Encodes one batch frame.
fn encode_frame(base_offset: i64, records: &[MetadataRecord]) -> Vec<u8> {
    let mut body = Writer::new();
    body.u8(BATCH_VERSION);
    body.u64(base_offset as u64);
    body.len(records.len());
    for r in records {
        r.encode_into(&mut body);
    }
    let body = body.into_inner();
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Decodes a batch body (after the CRC check).
fn decode_body(body: &[u8]) -> Result<(i64, Vec<MetadataRecord>), DecodeError> {
    let mut r = Reader::new(body);
    let version = r.u8()?;
    if version != BATCH_VERSION {
        return Err(DecodeError::Invalid(format!(
            "unknown batch version {version}"
        )));
    }
    let base_offset = r.u64()? as i64;
    let count = r.len(2)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push(MetadataRecord::decode_from(&mut r)?);
    }
    if !r.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes in batch".into()));
    }
    Ok((base_offset, records))
}

/// Reads `meta.properties`, creating it with a new cluster id when absent; returns the cluster id.
pub fn load_or_create_meta_properties(dir: &Path, node_id: i32) -> Result<String, LogError> {
    load_or_create_meta_properties_with(dir, node_id, None)
}

/// As [`load_or_create_meta_properties`], creating it with `cluster_id` (if given) instead of a random one.
pub fn load_or_create_meta_properties_with(
    dir: &Path,
    node_id: i32,
    cluster_id: Option<&str>,
) -> Result<String, LogError> {
    fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    let path = dir.join("meta.properties");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut cluster_id = None;
            let mut stored_node = None;
            for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
                if let Some((k, v)) = line.split_once('=') {
                    match k.trim() {
                        "cluster.id" => cluster_id = Some(v.trim().to_string()),
                        "node.id" => stored_node = v.trim().parse::<i32>().ok(),
                        _ => {}
                    }
                }
            }
            if let Some(stored) = stored_node {
                if stored != node_id {
                    return Err(LogError::MetaProperties(format!(
                        "{}: stored node.id {stored} does not match the configured node.id {node_id}",
                        path.display()
                    )));
                }
            }
            cluster_id.filter(|c| !c.is_empty()).ok_or_else(|| {
                LogError::MetaProperties(format!("{}: no cluster.id", path.display()))
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let cluster_id = cluster_id.map_or_else(new_cluster_id, str::to_string);
            let text = format!(
                "#\n#Written by Sluice\nversion=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"
            );
            let tmp = dir.join("meta.properties.tmp");
            let mut f = File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(io_err("write meta.properties"))?;
            fs::rename(&tmp, &path).map_err(io_err("rename meta.properties"))?;
            sync_dir(dir)?;
            Ok(cluster_id)
        }
        Err(e) => Err(LogError::Io {
            context: format!("read {}", path.display()),
            source: e,
        }),
    }
}

/// A Kafka-style cluster id: a random UUID in URL-safe base64 without padding (22 characters).
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

impl FileMetadataLog {
    /// Opens the log under `options.dir`, creating it if absent, and recovers the image:
    /// newest snapshot, then every later batch. `base` supplies the cluster id and controller id.
    pub fn open(
        options: &FileLogOptions,
        base: MetadataImage,
    ) -> Result<(FileMetadataLog, MetadataImage, RecoveryReport), LogError> {
        let log_dir = options.dir.join(LOG_DIR_NAME);
        fs::create_dir_all(&log_dir).map_err(io_err(format!("create {}", log_dir.display())))?;
        let lock = lock_dir(&log_dir, options.lock_wait_ms)?;
        let mut segments = Vec::new();
        let mut snapshots = Vec::new();
        for entry in
            fs::read_dir(&log_dir).map_err(io_err(format!("list {}", log_dir.display())))?
        {
            let entry = entry.map_err(io_err(format!("list {}", log_dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A snapshot that never finished: the rename is the commit point.
                let _ = fs::remove_file(entry.path());
            } else if let Some(o) = parse_offset(&name, ".log") {
                segments.push(o);
            } else if let Some(o) = parse_offset(&name, ".checkpoint") {
                snapshots.push(o);
            }
        }
        segments.sort_unstable();
        snapshots.sort_unstable();

        let mut report = RecoveryReport::default();
        let mut image = base.clone();
        // Newest snapshot that reads back whole; an unreadable one falls back to an older one.
        for &offset in snapshots.iter().rev() {
            match read_snapshot(&log_dir.join(snapshot_name(offset))) {
                Ok(mut snap) => {
                    snap.cluster_id = base.cluster_id.clone();
                    snap.controller_id = base.controller_id;
                    image = snap;
                    report.snapshot_offset = Some(offset);
                    break;
                }
                Err(e) => {
                    tracing::warn!("ignoring unreadable metadata snapshot at offset {offset}: {e}")
                }
            }
        }
        let mut next_offset = report.snapshot_offset.map_or(0, |o| o + 1);
        if report.snapshot_offset.is_none() {
            if let Some(first) = segments.first() {
                if *first != 0 {
                    return Err(LogError::Corrupt {
                        path: log_dir.join(segment_name(*first)),
                        position: 0,
                        reason: "the log does not start at offset 0 and no snapshot covers the gap"
                            .into(),
                    });
                }
            }
        }

        let mut delta = MetadataDelta::new(&image);
        let last_index = segments.len().checked_sub(1);
        let mut active_len = 0;
        for (i, &base_offset) in segments.iter().enumerate() {
            let path = log_dir.join(segment_name(base_offset));
            let is_last = Some(i) == last_index;
            let (valid_len, file_len) =
                replay_segment(&path, &mut delta, &mut next_offset, &mut report, is_last)?;
            if valid_len < file_len {
                // Only the last segment can have a torn tail (replay_segment errors otherwise).
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(format!("open {}", path.display())))?;
                f.set_len(valid_len)
                    .and_then(|_| f.sync_all())
                    .map_err(io_err(format!("truncate {}", path.display())))?;
                tracing::warn!(
                    "cut a torn metadata log tail: {} bytes of {} at byte {valid_len}",
                    file_len - valid_len,
                    path.display()
                );
                report.truncated_bytes += file_len - valid_len;
            }
            if is_last {
                active_len = valid_len;
            }
        }
        let image = delta.apply();

        let (active_path, active_len) = match segments.last() {
            Some(&base_offset) => (log_dir.join(segment_name(base_offset)), active_len),
            None => (log_dir.join(segment_name(next_offset)), 0),
        };
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&active_path)
            .map_err(io_err(format!("open {}", active_path.display())))?;
        if segments.is_empty() {
            sync_dir(&log_dir)?;
        }
        let log = FileMetadataLog {
            _lock: lock,
            log_dir,
            active,
            active_path,
            active_len,
            next_offset,
            snapshot_offset: report.snapshot_offset,
            snapshot_interval_records: options.snapshot_interval_records,
            failed: false,
        };
        Ok((log, image, report))
    }

    /// Writes a snapshot of `image` now (it must include every appended record), rolls to a new segment and
    /// deletes the segments and snapshots it makes redundant.
    pub fn snapshot(&mut self, image: &MetadataImage) -> Result<(), LogError> {
        if image.offset != self.next_offset - 1 || image.offset < 0 {
            return Ok(()); // Nothing new, or the image lags the log: never snapshot a partial state.
        }
        let body = image.encode();
        let mut bytes = Vec::with_capacity(16 + body.len());
        bytes.extend_from_slice(SNAPSHOT_MAGIC);
        bytes.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        let path = self.log_dir.join(snapshot_name(image.offset));
        let tmp = self
            .log_dir
            .join(format!("{}.tmp", snapshot_name(image.offset)));
        let mut f = File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(io_err(format!("write {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io_err(format!("rename {}", tmp.display())))?;
        // Roll: the next batch starts a new segment, so every older segment is covered by the snapshot.
        let new_path = self.log_dir.join(segment_name(self.next_offset));
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&new_path)
            .map_err(io_err(format!("open {}", new_path.display())))?;
        sync_dir(&self.log_dir)?;
        self.active_path = new_path;
        self.active = active;
        self.active_len = 0;
        self.snapshot_offset = Some(image.offset);
        // Delete what the durable snapshot covers; a failure here only leaves garbage behind.
        for entry in fs::read_dir(&self.log_dir)
            .map_err(io_err("list metadata log"))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let redundant = match (
                parse_offset(&name, ".log"),
                parse_offset(&name, ".checkpoint"),
            ) {
                (Some(base), _) => base < self.next_offset && entry.path() != self.active_path,
                (_, Some(o)) => o < image.offset,
                _ => false,
            };
            if redundant {
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::warn!("could not delete {}: {e}", entry.path().display());
                }
            }
        }
        sync_dir(&self.log_dir)
    }

    /// The directory holding segments and snapshots.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl MetadataLog for FileMetadataLog {
    fn append(&mut self, records: &[MetadataRecord]) -> Result<i64, LogError> {
        if self.failed {
            return Err(LogError::Failed);
        }
        let base_offset = self.next_offset;
        if records.is_empty() {
            return Ok(base_offset);
        }
        let frame = encode_frame(base_offset, records);
        let result = self
            .active
            .write_all(&frame)
            .and_then(|_| self.active.sync_data());
        if let Err(source) = result {
            // Undo a partial write so later batches do not follow garbage; if that fails too, stop
            // accepting appends (recovery at the next start cuts the torn tail).
            let undo = self
                .active
                .set_len(self.active_len)
                .and_then(|_| self.active.sync_data());
            if undo.is_err() {
                self.failed = true;
            }
            return Err(LogError::Io {
                context: format!("append to {}", self.active_path.display()),
                source,
            });
        }
        self.active_len += frame.len() as u64;
        self.next_offset += records.len() as i64;
        Ok(base_offset)
    }

    fn next_offset(&self) -> i64 {
        self.next_offset
    }

    fn maybe_snapshot(&mut self, image: &MetadataImage) -> Result<bool, LogError> {
        if self.snapshot_interval_records == 0 {
            return Ok(false);
        }
        let since = self.next_offset - 1 - self.snapshot_offset.unwrap_or(-1);
        if since < self.snapshot_interval_records as i64 {
            return Ok(false);
        }
        self.snapshot(image)?;
        Ok(true)
    }
}

fn read_snapshot(path: &Path) -> Result<MetadataImage, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < 16 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err("bad magic".into());
    }
    let len = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let crc = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let body = &bytes[16..];
    if body.len() != len {
        return Err(format!("length {len} but {} bytes", body.len()));
    }
    if crc32c::crc32c(body) != crc {
        return Err("CRC mismatch".into());
    }
    MetadataImage::decode(body).map_err(|e| e.to_string())
}

/// Replays one segment; returns (bytes of whole valid frames, file length). A bad frame in the last segment
/// is a torn tail (the caller cuts it); anywhere else it is an error.
fn replay_segment(
    path: &Path,
    delta: &mut MetadataDelta,
    next_offset: &mut i64,
    report: &mut RecoveryReport,
    is_last: bool,
) -> Result<(u64, u64), LogError> {
    let mut file = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    let file_len = file
        .seek(SeekFrom::End(0))
        .map_err(io_err(format!("seek {}", path.display())))?;
    file.seek(SeekFrom::Start(0))
        .map_err(io_err(format!("seek {}", path.display())))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(io_err(format!("read {}", path.display())))?;
    let mut pos = 0usize;
    let bad = |pos: usize, reason: String| -> Result<(u64, u64), LogError> {
        if is_last {
            Ok((pos as u64, file_len))
        } else {
            Err(LogError::Corrupt {
                path: path.to_path_buf(),
                position: pos as u64,
                reason,
            })
        }
    };
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < FRAME_HEADER_BYTES {
            return bad(pos, "truncated frame header".into());
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_FRAME_BYTES || rest.len() - FRAME_HEADER_BYTES < len {
            return bad(pos, format!("frame length {len} runs past the end"));
        }
        let body = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
        if crc32c::crc32c(body) != crc {
            return bad(pos, "CRC mismatch".into());
        }
        let (base_offset, records) = match decode_body(body) {
            Ok(batch) => batch,
            // The CRC matched, so this is not a torn write: a format this code cannot read.
            Err(e) => {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    position: pos as u64,
                    reason: e.to_string(),
                })
            }
        };
        let last_offset = base_offset + records.len() as i64 - 1;
        if last_offset < *next_offset {
            // Already in the snapshot.
            if base_offset + records.len() as i64 > *next_offset && !records.is_empty() {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    position: pos as u64,
                    reason: "batch straddles the snapshot offset".into(),
                });
            }
        } else if base_offset != *next_offset {
            return Err(LogError::Corrupt {
                path: path.to_path_buf(),
                position: pos as u64,
                reason: format!("batch base offset {base_offset}, expected {next_offset}"),
            });
        } else {
            for (i, record) in records.iter().enumerate() {
                let offset = base_offset + i as i64;
                delta
                    .replay(offset, record)
                    .map_err(|source| LogError::Replay { offset, source })?;
            }
            report.records_replayed += records.len() as u64;
            *next_offset = last_offset + 1;
        }
        pos += FRAME_HEADER_BYTES + len;
    }
    Ok((pos as u64, file_len))
}

/// A metadata log in memory, for tests and tools: appends succeed and nothing is durable.
#[derive(Debug, Default)]
pub struct MemoryMetadataLog {
    /// Every batch appended, in order.
    pub batches: Vec<Vec<MetadataRecord>>,
    next_offset: i64,
}

impl MetadataLog for MemoryMetadataLog {
    fn append(&mut self, records: &[MetadataRecord]) -> Result<i64, LogError> {
        let base = self.next_offset;
        if !records.is_empty() {
            self.batches.push(records.to_vec());
            self.next_offset += records.len() as i64;
        }
        Ok(base)
    }
    fn next_offset(&self) -> i64 {
        self.next_offset
    }
    fn maybe_snapshot(&mut self, _image: &MetadataImage) -> Result<bool, LogError> {
        Ok(false)
    }
}
