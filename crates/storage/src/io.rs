//! The file-access seam: every byte the log reads or writes goes through [`Io`](crate::io::Io) and [`IoFile`](crate::io::IoFile), so tests
//! can inject ENOSPC, EIO and torn writes ([`FaultyIo`](crate::io::FaultyIo)) and count fsyncs.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// One open file. Positional reads and writes only: no shared cursor, safe to use from many threads.
pub trait IoFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns the count (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset` (may have written a prefix when it fails).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Forces written data to stable storage (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current length of the file.
    fn len(&self) -> io::Result<u64>;
    /// True when the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Appends up to `len` bytes read at `offset` to `buf` (fewer only at end of file). The real file
    /// reads straight into the vector's spare capacity, so a large read does not pay for zeroing it.
    fn read_at_into(&self, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
        let start = buf.len();
        buf.resize(start + len, 0);
        let n = read_full_at_dyn(self, &mut buf[start..], offset)?;
        buf.truncate(start + n);
        Ok(())
    }
}

fn read_full_at_dyn<F: IoFile + ?Sized>(
    file: &F,
    buf: &mut [u8],
    offset: u64,
) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// File-system operations the log needs.
pub trait Io: Send + Sync + Debug {
    /// Opens `path` for reading and writing, creating it when `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries in a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Renames a file or directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory tree.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// True when `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Fsyncs a directory so renames and creations in it are durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// Reads the whole file at `path` through the seam.
pub fn read_file(io: &dyn Io, path: &Path) -> io::Result<Vec<u8>> {
    let file = io.open(path, false)?;
    let len = usize::try_from(file.len()?).map_err(|_| io::Error::other("file too large"))?;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = file.read_at(&mut buf[done..], done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// Distinguishes concurrent temporary files of [`write_file_atomic`] within this process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `data` to `path` atomically: write a uniquely named `<name>.<pid>-<n>.tmp` sibling, fsync it,
/// rename over `path`, fsync the dir. The unique name lets two writers of one file (or an old and a new
/// instance during an in-process restart) never rename each other's temporary file away.
pub fn write_file_atomic(io: &dyn Io, path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let file = io.open(&tmp, true)?;
        file.set_len(0)?;
        file.write_all_at(data, 0)?;
        file.sync_data()?;
        io.rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = io.remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        io.sync_dir(dir)?;
    }
    Ok(())
}

/// Replaces `path` with `data` through a uniquely named temporary file and a rename, without fsync: for
/// files whose content is self-validating (a CRC) and whose loss only costs work at the next open, such as
/// producer-state snapshots written at a segment roll.
pub fn replace_file_unsynced(io: &dyn Io, path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let file = io.open(&tmp, true)?;
        file.set_len(0)?;
        file.write_all_at(data, 0)?;
        io.rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = io.remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Reads until `buf` is full or end of file; returns the bytes read.
pub fn read_full_at(file: &dyn IoFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    read_full_at_dyn(file, buf, offset)
}

/// `pread` into the spare capacity of `buf` without initialising it first; returns the bytes read.
#[allow(unsafe_code)]
fn pread_spare(file: &File, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    buf.reserve(len);
    let start = buf.len();
    let mut done = 0usize;
    while done < len {
        let pos = i64::try_from(offset + done as u64)
            .map_err(|_| io::Error::other("offset too large"))?;
        // SAFETY: `reserve` guarantees capacity for `start + len` bytes, so the pointer and length
        // describe writable memory owned by `buf`; the kernel only writes into it (no reference to
        // uninitialised bytes is ever created) and returns how many bytes it wrote.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(start + done).cast::<libc::c_void>(),
                len - done,
                pos,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    // SAFETY: the first `start + done` bytes are initialised: `start` were already, and `pread` wrote
    // the next `done`; `start + done <= capacity`.
    unsafe { buf.set_len(start + done) };
    Ok(done)
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealIo;

#[derive(Debug)]
struct RealFile(File);

impl IoFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at_into(&self, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
        pread_spare(&self.0, buf, len, offset).map(|_| ())
    }
}

impl Io for RealIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}

/// A fault to inject into writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// Every write fails with ENOSPC after writing the first `written` bytes of the buffer.
    DiskFull {
        /// Bytes that reach the file before the failure (a torn write).
        written: usize,
    },
    /// Every write (and fsync) fails with EIO.
    Eio,
}

/// Shared switches and counters of a [`FaultyIo`].
#[derive(Debug, Default)]
pub struct Faults {
    write_fault: Mutex<Option<WriteFault>>,
    /// Number of `sync_data` calls on files.
    pub fsyncs: AtomicU64,
    /// Number of `write_all_at` calls on files.
    pub writes: AtomicU64,
    /// Bytes returned by reads of files.
    pub read_bytes: AtomicU64,
    /// When set, fsyncs are counted but not performed (fast tests that never lose the page cache).
    pub skip_fsync: std::sync::atomic::AtomicBool,
}

impl Faults {
    /// Sets (or clears, with `None`) the fault applied to every following write.
    pub fn set_write_fault(&self, fault: Option<WriteFault>) {
        *self.write_fault.lock() = fault;
    }
    fn write_fault(&self) -> Option<WriteFault> {
        *self.write_fault.lock()
    }
}

/// Wraps the real file system, injecting [`WriteFault`]s and counting fsyncs and writes.
#[derive(Debug, Default, Clone)]
pub struct FaultyIo {
    /// The switches and counters, shared with every file this opens.
    pub faults: Arc<Faults>,
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn IoFile>,
    faults: Arc<Faults>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

impl IoFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = self.inner.read_at(buf, offset)?;
        self.faults
            .read_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn read_at_into(&self, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
        let before = buf.len();
        self.inner.read_at_into(buf, len, offset)?;
        self.faults
            .read_bytes
            .fetch_add((buf.len() - before) as u64, Ordering::Relaxed);
        Ok(())
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.faults.writes.fetch_add(1, Ordering::Relaxed);
        match self.faults.write_fault() {
            None => self.inner.write_all_at(buf, offset),
            Some(WriteFault::DiskFull { written }) => {
                let n = written.min(buf.len());
                self.inner.write_all_at(&buf[..n], offset)?;
                Err(enospc())
            }
            Some(WriteFault::Eio) => Err(eio()),
        }
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.fsyncs.fetch_add(1, Ordering::Relaxed);
        if self.faults.write_fault() == Some(WriteFault::Eio) {
            return Err(eio());
        }
        if self.faults.skip_fsync.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.faults.write_fault() == Some(WriteFault::Eio) {
            return Err(eio());
        }
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl Io for FaultyIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        if create && !path.exists() {
            match self.faults.write_fault() {
                Some(WriteFault::DiskFull { .. }) => return Err(enospc()),
                Some(WriteFault::Eio) => return Err(eio()),
                None => {}
            }
        }
        let inner = RealIo.open(path, create)?;
        Ok(Arc::new(FaultyFile {
            inner,
            faults: self.faults.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealIo.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        RealIo.list_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.faults.write_fault() == Some(WriteFault::Eio) {
            return Err(eio());
        }
        RealIo.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealIo.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        RealIo.remove_dir_all(path)
    }
    fn exists(&self, path: &Path) -> bool {
        RealIo.exists(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.faults.fsyncs.fetch_add(1, Ordering::Relaxed);
        if self.faults.skip_fsync.load(Ordering::Relaxed) {
            return Ok(());
        }
        RealIo.sync_dir(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_atomic_writes_of_one_file_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_file_atomic(&RealIo, path, &[t; 16]).unwrap();
                    }
                });
            }
        });
        let data = read_file(&RealIo, &path).unwrap();
        assert_eq!(data.len(), 16);
        assert!(
            data.iter().all(|b| *b == data[0]),
            "one writer's whole content"
        );
        let names = RealIo.list_dir(dir.path()).unwrap();
        assert_eq!(
            names,
            vec!["checkpoint".to_string()],
            "no temporary file left"
        );
    }

    #[test]
    fn read_at_into_reads_without_zeroing_and_stops_at_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = RealIo.open(&path, true).unwrap();
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        file.write_all_at(&data, 0).unwrap();
        let mut buf = b"head".to_vec();
        file.read_at_into(&mut buf, 5000, 100).unwrap();
        assert_eq!(&buf[..4], b"head");
        assert_eq!(&buf[4..], &data[100..5100]);
        let mut tail = Vec::new();
        file.read_at_into(&mut tail, 5000, 9000).unwrap();
        assert_eq!(tail, &data[9000..]);
        let faulty = FaultyIo::default().open(&path, false).unwrap();
        let mut via_seam = Vec::new();
        faulty.read_at_into(&mut via_seam, 10, 0).unwrap();
        assert_eq!(via_seam, &data[..10]);
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        write_file_atomic(&RealIo, &path, b"one").unwrap();
        write_file_atomic(&RealIo, &path, b"two!").unwrap();
        assert_eq!(read_file(&RealIo, &path).unwrap(), b"two!");
        assert!(!dir.path().join("cp.tmp").exists());
    }
}
