//! Helpers shared by the storage integration tests: deterministic batches (built with the test kit) and whole-log
//! verification.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sluice_protocol::batch::{BatchHeader, Batches};
use sluice_storage::io::{Io, IoFile, RealIo};
use sluice_storage::Log;
use sluice_testkit::batch::values_batch;

/// A batch of `records` records whose values encode `tag` (so content can be checked after reads).
pub fn batch(records: usize, tag: u64, timestamp_ms: i64) -> Vec<u8> {
    values_batch(timestamp_ms, (0..records).map(|i| format!("v-{tag}-{i}")))
}

/// Reads the whole log from the start, checking that every batch is whole, CRC-valid and that offsets
/// are dense; returns `(base_offset, last_offset, bytes)` per batch.
pub fn read_all(log: &Log) -> Vec<(i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let leo = log.log_end_offset();
    while offset < leo {
        let r = log.read(offset, 1 << 20, i64::MAX).expect("read");
        assert!(
            !r.data.is_empty(),
            "no data at offset {offset} below LEO {leo}"
        );
        for item in Batches::new(&r.data) {
            let (_, h) = item.expect("whole batch");
            h.validate().expect("valid batch");
            if !out.is_empty() {
                let prev: &(i64, i64, Vec<u8>) = out.last().unwrap();
                assert_eq!(h.base_offset(), prev.1 + 1, "offsets must be dense");
            }
            out.push((h.base_offset(), h.last_offset(), h.bytes().to_vec()));
            offset = h.next_offset();
        }
    }
    out
}

/// Header of a batch held in `bytes`.
pub fn header(bytes: &[u8]) -> BatchHeader<'_> {
    BatchHeader::new(bytes).expect("header")
}

/// An [`Io`] that dies after `budget` mutating operations: that one and every later one fails and does
/// nothing, as if the process had been killed there.
#[derive(Debug)]
pub struct DyingIo {
    /// The file system operations go to.
    pub real: RealIo,
    /// Mutating operations left before the "kill".
    pub budget: AtomicU64,
}

impl DyingIo {
    /// Counts one mutating operation; fails once the budget is spent.
    pub fn spend(&self) -> io::Result<()> {
        let left = self.budget.load(Ordering::SeqCst);
        if left == 0 {
            return Err(io::Error::other("killed"));
        }
        self.budget.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Debug)]
pub struct DyingFile {
    inner: Arc<dyn IoFile>,
    io: Arc<DyingIo>,
}

impl IoFile for DyingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.io.spend()?;
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.io.spend()?;
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.io.spend()?;
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

#[derive(Debug, Clone)]
/// The [`Io`] of a [`DyingIo`], for `LogOptions::io`.
pub struct DyingIoHandle(pub Arc<DyingIo>);

impl Io for DyingIoHandle {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        if create && !path.exists() {
            self.0.spend()?;
        }
        let inner = self.0.real.open(path, create)?;
        Ok(Arc::new(DyingFile {
            inner,
            io: self.0.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.0.real.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.0.real.list_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.spend()?;
        self.0.real.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.spend()?;
        self.0.real.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.0.spend()?;
        self.0.real.remove_dir_all(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.0.real.exists(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.0.spend()?;
        self.0.real.sync_dir(path)
    }
}
