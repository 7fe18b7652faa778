//! The durable Raft state of one quorum member: the log entries after the latest snapshot, the hard state (term,
//! vote, commit) and the snapshot itself (an encoded [`MetadataImage`]), implementing raft-rs's [`Storage`].
//!
//! Everything raft-rs reads is kept in memory (metadata is small, and the snapshot bounds the entries); every change
//! is written through a [`Disk`] before the call returns, so what a [`QuorumStore`] says is persisted is on disk
//! (or, in the simulation, in the [`MemoryDisk`] that survives a simulated crash).
//!
//! On disk (`FileDisk`, under `<metadata dir>/__cluster_metadata/`):
//! - `quorum.log`: frames `[length u32][crc32c u32][Entry protobuf]`, appended and fdatasynced. An entry at index `i`
//!   replaces every entry at `i` or later that an earlier frame wrote (Raft overwrites a conflicting suffix), so
//!   loading replays the frames in order with that rule. A torn or corrupt frame at the end is cut (a crash
//!   mid-append); the snapshot and compaction rewrite the file without the entries they cover.
//! - `quorum.state`: the hard state protobuf, written to a `.tmp` file, fsynced and renamed.
//! - `quorum.snapshot`: `[magic 8][length u32][crc32c u32][Snapshot protobuf]`, written the same way.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

const LOG_FILE: &str = "quorum.log";
const STATE_FILE: &str = "quorum.state";
const SNAPSHOT_FILE: &str = "quorum.snapshot";
const SNAPSHOT_MAGIC: &[u8; 8] = b"SLCQSNP1";
/// A frame longer than this is treated as a torn or corrupt tail.
const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// The quorum's durable state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// A file that must be valid is not.
    #[error("corrupt quorum state {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// What a quorum member has persisted, as loaded at start-up.
#[derive(Debug, Clone, Default)]
pub struct Persisted {
    /// Term, vote and commit.
    pub hard_state: HardState,
    /// The latest snapshot (index 0 and no data when there is none).
    pub snapshot: Snapshot,
    /// The entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// Where a [`QuorumStore`] writes. Every method returns once the change is durable.
pub trait Disk: Send + Sync {
    /// Appends entries; an entry at index `i` supersedes every earlier-written entry at `i` or later.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError>;
    /// Replaces the hard state.
    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError>;
    /// Replaces the snapshot and rewrites the log to hold exactly `entries` (those after the snapshot).
    fn set_snapshot(&mut self, snapshot: &Snapshot, entries: &[Entry]) -> Result<(), StoreError>;
}

/// A disk in memory: the simulation's durable state, kept across a simulated crash of its node.
#[derive(Debug, Default, Clone)]
pub struct MemoryDisk {
    persisted: Arc<parking_lot::Mutex<Persisted>>,
}

impl MemoryDisk {
    /// What was persisted so far (what a restarted node loads).
    pub fn load(&self) -> Persisted {
        self.persisted.lock().clone()
    }
}

impl Disk for MemoryDisk {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let mut p = self.persisted.lock();
        append_entries(&mut p.entries, entries);
        Ok(())
    }
    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
        self.persisted.lock().hard_state = hs.clone();
        Ok(())
    }
    fn set_snapshot(&mut self, snapshot: &Snapshot, entries: &[Entry]) -> Result<(), StoreError> {
        let mut p = self.persisted.lock();
        p.snapshot = snapshot.clone();
        p.entries = entries.to_vec();
        Ok(())
    }
}

/// Appends `new` to `entries` with Raft's overwrite rule (drop everything from `new[0].index` on).
fn append_entries(entries: &mut Vec<Entry>, new: &[Entry]) {
    let Some(first) = new.first() else {
        return;
    };
    if let Some(pos) = entries.iter().position(|e| e.index >= first.index) {
        entries.truncate(pos);
    }
    entries.extend_from_slice(new);
}

/// The files of a quorum member under one directory.
#[derive(Debug)]
pub struct FileDisk {
    dir: PathBuf,
    log: File,
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("fsync directory {}", dir.display())))
}

/// Writes `bytes` to `dir/name` atomically: a `.tmp` file, fsync, rename, fsync of the directory.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, dir.join(name)).map_err(io_err(format!("rename {}", tmp.display())))?;
    sync_dir(dir)
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        // Encoding a message held in memory cannot fail (no required fields in proto3).
        let bytes = e.write_to_bytes().unwrap_or_default();
        frame(&bytes, &mut out);
    }
    out
}

impl FileDisk {
    /// Opens (creating if absent) the quorum files under `dir` and loads them. A torn or corrupt tail of the log is
    /// cut; a corrupt state or snapshot file is an error (the node must not vote or serve from a guess).
    pub fn open(dir: &Path) -> Result<(FileDisk, Persisted), StoreError> {
        fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let mut persisted = Persisted::default();
        let state_path = dir.join(STATE_FILE);
        match fs::read(&state_path) {
            Ok(bytes) => {
                persisted.hard_state =
                    HardState::parse_from_bytes(&bytes).map_err(|e| StoreError::Corrupt {
                        path: state_path.clone(),
                        reason: e.to_string(),
                    })?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("read {}", state_path.display()))(e)),
        }
        let snap_path = dir.join(SNAPSHOT_FILE);
        match fs::read(&snap_path) {
            Ok(bytes) => persisted.snapshot = decode_snapshot_file(&snap_path, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("read {}", snap_path.display()))(e)),
        }
        let log_path = dir.join(LOG_FILE);
        let mut log = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("open {}", log_path.display())))?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)
            .map_err(io_err(format!("read {}", log_path.display())))?;
        let snapshot_index = persisted.snapshot.get_metadata().index;
        let mut pos = 0usize;
        while pos < bytes.len() {
            let Some(entry) = read_frame(&bytes[pos..]) else {
                break;
            };
            let (entry, len) = entry;
            pos += len;
            if entry.index > snapshot_index {
                append_entries(&mut persisted.entries, std::slice::from_ref(&entry));
            }
        }
        if pos < bytes.len() {
            tracing::warn!(
                path = %log_path.display(),
                cut_bytes = bytes.len() - pos,
                "cutting a torn or corrupt tail of the quorum log"
            );
            log.set_len(pos as u64)
                .and_then(|_| log.sync_all())
                .map_err(io_err(format!("truncate {}", log_path.display())))?;
        }
        // The entries must continue the snapshot without a gap; anything else is not a log this code wrote.
        if let Some(first) = persisted.entries.first() {
            if snapshot_index > 0 && first.index != snapshot_index + 1 {
                return Err(StoreError::Corrupt {
                    path: log_path,
                    reason: format!(
                        "first entry {} does not follow snapshot {snapshot_index}",
                        first.index
                    ),
                });
            }
        }
        if persisted
            .entries
            .windows(2)
            .any(|w| w[1].index != w[0].index + 1)
        {
            return Err(StoreError::Corrupt {
                path: log_path,
                reason: "entries are not contiguous".into(),
            });
        }
        Ok((
            FileDisk {
                dir: dir.to_path_buf(),
                log,
            },
            persisted,
        ))
    }
}

/// One frame at the start of `bytes`: the entry and the frame's length, or `None` when torn or corrupt.
fn read_frame(bytes: &[u8]) -> Option<(Entry, usize)> {
    if bytes.len() < 8 {
        return None;
    }
    let len = u32::from_be_bytes(bytes[0..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(bytes[4..8].try_into().ok()?);
    if len > MAX_FRAME_BYTES || bytes.len() - 8 < len {
        return None;
    }
    let payload = &bytes[8..8 + len];
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    Entry::parse_from_bytes(payload).ok().map(|e| (e, 8 + len))
}

fn decode_snapshot_file(path: &Path, bytes: &[u8]) -> Result<Snapshot, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 16 || &bytes[0..8] != SNAPSHOT_MAGIC {
        return Err(corrupt("bad magic"));
    }
    let len = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let crc = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let body = &bytes[16..];
    if body.len() != len || crc32c::crc32c(body) != crc {
        return Err(corrupt("length or CRC mismatch"));
    }
    Snapshot::parse_from_bytes(body).map_err(|e| corrupt(&e.to_string()))
}

impl Disk for FileDisk {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let bytes = encode_entries(entries);
        self.log
            .write_all(&bytes)
            .and_then(|_| self.log.sync_data())
            .map_err(io_err("append to quorum.log"))
    }

    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
        let bytes = hs.write_to_bytes().unwrap_or_default();
        write_atomically(&self.dir, STATE_FILE, &bytes)
    }

    fn set_snapshot(&mut self, snapshot: &Snapshot, entries: &[Entry]) -> Result<(), StoreError> {
        let body = snapshot.write_to_bytes().unwrap_or_default();
        let mut file = Vec::with_capacity(body.len() + 16);
        file.extend_from_slice(SNAPSHOT_MAGIC);
        file.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        file.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        file.extend_from_slice(&body);
        // Snapshot first: a crash between the two leaves a log whose covered entries load drops.
        write_atomically(&self.dir, SNAPSHOT_FILE, &file)?;
        write_atomically(&self.dir, LOG_FILE, &encode_entries(entries))?;
        let path = self.dir.join(LOG_FILE);
        self.log = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        Ok(())
    }
}

struct Inner {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    disk: Box<dyn Disk>,
    /// Entry bytes appended since the latest snapshot (drives `metadata.log.max.record.bytes.between.snapshots`).
    bytes_since_snapshot: u64,
}

impl Inner {
    fn first_index(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }
    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.get_metadata().index, |e| e.index)
    }
}

/// A quorum member's Raft storage: a cheap handle (shared between the Raft node and the readers that serve the
/// committed log to observers), every change persisted through its [`Disk`] before it returns.
#[derive(Clone)]
pub struct QuorumStore {
    inner: Arc<RwLock<Inner>>,
}

impl std::fmt::Debug for QuorumStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.read();
        f.debug_struct("QuorumStore")
            .field("first_index", &inner.first_index())
            .field("last_index", &inner.last_index())
            .field("commit", &inner.hard_state.commit)
            .finish()
    }
}

/// The committed log from some index on, as an observer reads it.
#[derive(Debug, Clone)]
pub enum CommittedRead {
    /// Entries from the requested index up to the commit index (possibly none yet).
    Entries(Vec<Entry>),
    /// The requested index is below the log start: install this snapshot, then read on from after it.
    Snapshot(Snapshot),
}

impl QuorumStore {
    /// A store over what `disk` holds. `voters` is the static voter set (`controller.quorum.voters`); a store that
    /// has a snapshot takes the voters recorded in it.
    pub fn new(disk: Box<dyn Disk>, persisted: Persisted, voters: &[u64]) -> QuorumStore {
        let mut conf_state = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        let mut snapshot = persisted.snapshot;
        if snapshot.get_metadata().index > 0 {
            conf_state = snapshot.get_metadata().get_conf_state().clone();
        } else {
            snapshot.mut_metadata().set_conf_state(conf_state.clone());
        }
        let mut hard_state = persisted.hard_state;
        let snap_index = snapshot.get_metadata().index;
        let last = persisted.entries.last().map_or(snap_index, |e| e.index);
        // A commit index persisted before a crash may lie beyond a log tail that was cut: clamp it.
        hard_state.commit = hard_state.commit.clamp(snap_index, last);
        QuorumStore {
            inner: Arc::new(RwLock::new(Inner {
                hard_state,
                conf_state,
                snapshot,
                entries: persisted.entries,
                disk,
                bytes_since_snapshot: 0,
            })),
        }
    }

    /// Persists and keeps entries from a Ready.
    pub fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut inner = self.inner.write();
        assert!(
            entries[0].index >= inner.first_index(),
            "append of compacted index {} (first index {})",
            entries[0].index,
            inner.first_index()
        );
        assert!(
            entries[0].index <= inner.last_index() + 1,
            "gap before appended index {} (last index {})",
            entries[0].index,
            inner.last_index()
        );
        inner.disk.append(entries)?;
        inner.bytes_since_snapshot += entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
        append_entries(&mut inner.entries, entries);
        Ok(())
    }

    /// Persists a hard state from a Ready.
    pub fn set_hard_state(&self, hs: &HardState) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        inner.disk.set_hard_state(hs)?;
        inner.hard_state = hs.clone();
        Ok(())
    }

    /// Records a commit index learned after a Ready (`LightReady::commit_index`). Kept in memory only: a commit
    /// index lost in a crash is learned again from the leader (or, alone, re-established by the next election).
    pub fn set_commit(&self, commit: u64) {
        let mut inner = self.inner.write();
        if commit > inner.hard_state.commit {
            inner.hard_state.commit = commit;
        }
    }

    /// Installs a snapshot received from the leader: the entries it covers are dropped (all of them, as raft-rs
    /// only sends a snapshot past this node's log).
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        let meta = snapshot.get_metadata().clone();
        if meta.index < inner.first_index() {
            return Ok(());
        }
        let keep: Vec<Entry> = inner
            .entries
            .iter()
            .filter(|e| e.index > meta.index)
            .cloned()
            .collect();
        // Keep entries after the snapshot only if they agree with it (same term at the boundary is not checkable
        // here; raft-rs sends snapshots only past our log, so `keep` is empty in practice).
        inner.disk.set_snapshot(&snapshot, &keep)?;
        inner.entries = keep;
        inner.conf_state = meta.get_conf_state().clone();
        inner.hard_state.term = inner.hard_state.term.max(meta.term);
        inner.hard_state.commit = inner.hard_state.commit.max(meta.index);
        inner.snapshot = snapshot;
        inner.bytes_since_snapshot = 0;
        Ok(())
    }

    /// Takes a snapshot of the state machine at `index` (which must be applied, hence committed) with `data` (the
    /// encoded image), and drops the entries it covers.
    pub fn create_snapshot(&self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        if index <= inner.snapshot.get_metadata().index {
            return Ok(());
        }
        assert!(
            index <= inner.hard_state.commit,
            "snapshot at {index} beyond commit {}",
            inner.hard_state.commit
        );
        let term = inner
            .entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
            .expect("a committed index above the snapshot has its entry");
        let meta = SnapshotMetadata {
            index,
            term,
            conf_state: Some(inner.conf_state.clone()).into(),
            ..Default::default()
        };
        let snapshot = Snapshot {
            data: data.into(),
            metadata: Some(meta).into(),
            ..Default::default()
        };
        let keep: Vec<Entry> = inner
            .entries
            .iter()
            .filter(|e| e.index > index)
            .cloned()
            .collect();
        inner.disk.set_snapshot(&snapshot, &keep)?;
        inner.entries = keep;
        inner.snapshot = snapshot;
        inner.bytes_since_snapshot = 0;
        Ok(())
    }

    /// Entry bytes appended since the latest snapshot.
    pub fn bytes_since_snapshot(&self) -> u64 {
        self.inner.read().bytes_since_snapshot
    }

    /// The latest snapshot (index 0 when none).
    pub fn snapshot_data(&self) -> Snapshot {
        self.inner.read().snapshot.clone()
    }

    /// The persisted/known commit index.
    pub fn commit_index(&self) -> u64 {
        self.inner.read().hard_state.commit
    }

    /// The first and last index held (first = snapshot index + 1).
    pub fn bounds(&self) -> (u64, u64) {
        let inner = self.inner.read();
        (inner.first_index(), inner.last_index())
    }

    /// Committed entries from `from` on (at most `max_bytes` of entry data, at least one entry when there is one),
    /// or the snapshot when `from` is below the log start. This is how observers follow the log: they only ever see
    /// committed entries, never a suffix that could be truncated.
    pub fn read_committed(&self, from: u64, max_bytes: usize) -> CommittedRead {
        let inner = self.inner.read();
        if from < inner.first_index() && inner.snapshot.get_metadata().index > 0 {
            return CommittedRead::Snapshot(inner.snapshot.clone());
        }
        let commit = inner.hard_state.commit;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in inner
            .entries
            .iter()
            .filter(|e| e.index >= from && e.index <= commit)
        {
            if !out.is_empty() && bytes + e.data.len() > max_bytes {
                break;
            }
            bytes += e.data.len();
            out.push(e.clone());
        }
        CommittedRead::Entries(out)
    }
}

impl Storage for QuorumStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let inner = self.inner.read();
        Ok(RaftState::new(
            inner.hard_state.clone(),
            inner.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let inner = self.inner.read();
        if low < inner.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > inner.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = inner.first_index();
        let lo = (low - offset) as usize;
        let hi = (high - offset) as usize;
        let mut ents = inner.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let inner = self.inner.read();
        let snap = inner.snapshot.get_metadata();
        if idx == snap.index {
            return Ok(snap.term);
        }
        if idx < inner.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > inner.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(inner.entries[(idx - inner.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.inner.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.inner.read().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let inner = self.inner.read();
        if inner.snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(inner.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn file_disk_reloads_entries_state_and_snapshot_and_applies_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (disk, persisted) = FileDisk::open(dir.path()).unwrap();
            let store = QuorumStore::new(Box::new(disk), persisted, &[1, 2, 3]);
            store
                .append(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")])
                .unwrap();
            // A new leader overwrote index 3 onwards.
            store
                .append(&[entry(3, 2, b"C"), entry(4, 2, b"d")])
                .unwrap();
            let hs = HardState {
                term: 2,
                vote: 2,
                commit: 2,
                ..Default::default()
            };
            store.set_hard_state(&hs).unwrap();
        }
        let (_disk, persisted) = FileDisk::open(dir.path()).unwrap();
        assert_eq!(persisted.hard_state.term, 2);
        let got: Vec<(u64, u64)> = persisted
            .entries
            .iter()
            .map(|e| (e.index, e.term))
            .collect();
        assert_eq!(got, vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
        let store = QuorumStore::new(Box::new(_disk), persisted, &[1, 2, 3]);
        store.set_commit(4);
        store.create_snapshot(3, b"image".to_vec()).unwrap();
        drop(store);
        let (_disk, persisted) = FileDisk::open(dir.path()).unwrap();
        assert_eq!(persisted.snapshot.get_metadata().index, 3);
        assert_eq!(persisted.snapshot.get_metadata().term, 2);
        assert_eq!(&persisted.snapshot.data[..], b"image");
        assert_eq!(persisted.entries.len(), 1);
        assert_eq!(persisted.entries[0].index, 4);
        assert_eq!(
            persisted.snapshot.get_metadata().get_conf_state().voters,
            vec![1, 2, 3]
        );
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (disk, persisted) = FileDisk::open(dir.path()).unwrap();
            let store = QuorumStore::new(Box::new(disk), persisted, &[1]);
            store
                .append(&[entry(1, 1, b"a"), entry(2, 1, b"b")])
                .unwrap();
        }
        let path = dir.path().join(LOG_FILE);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (disk, persisted) = FileDisk::open(dir.path()).unwrap();
        assert_eq!(persisted.entries.len(), 1);
        let store = QuorumStore::new(Box::new(disk), persisted, &[1]);
        store.append(&[entry(2, 2, b"x")]).unwrap();
        drop(store);
        let (_, persisted) = FileDisk::open(dir.path()).unwrap();
        let got: Vec<(u64, u64)> = persisted
            .entries
            .iter()
            .map(|e| (e.index, e.term))
            .collect();
        assert_eq!(got, vec![(1, 1), (2, 2)]);
    }

    #[test]
    fn corrupt_state_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), [0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(
            FileDisk::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn read_committed_stops_at_commit_and_answers_snapshot_below_start() {
        let store = QuorumStore::new(Box::new(MemoryDisk::default()), Persisted::default(), &[1]);
        store
            .append(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")])
            .unwrap();
        store.set_commit(2);
        match store.read_committed(1, 1 << 20) {
            CommittedRead::Entries(e) => assert_eq!(e.len(), 2),
            other => panic!("{other:?}"),
        }
        store.create_snapshot(2, b"img".to_vec()).unwrap();
        assert!(matches!(
            store.read_committed(1, 1 << 20),
            CommittedRead::Snapshot(_)
        ));
        match store.read_committed(3, 1 << 20) {
            CommittedRead::Entries(e) => assert!(e.is_empty(), "3 is not committed"),
            other => panic!("{other:?}"),
        }
    }
}
