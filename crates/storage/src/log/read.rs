//! Reading: whole batches as one buffer ([`Log::read`]) or as file ranges for `sendfile`
//! ([`Log::read_slices`]), and the ListOffsets lookups by timestamp.

use std::fs::File;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use sluice_protocol::batch::{self, BatchHeader, Batches, RECORD_BATCH_OVERHEAD};

use crate::index::{lookup_position, lookup_time, OffsetEntry, TimeEntry};
use crate::io::IoFile;
use crate::segment::{read_header_at, segment_path, LOG_SUFFIX};
use crate::{ReadError, StorageError};

use super::{FileReadResult, FileSlice, Log, ReadResult, Segment, TimestampOffset};

/// `(log start, log end, high watermark, last stable offset)` at the time of a read.
type ReadMeta = (i64, i64, i64, i64);

/// A read planned by [`Log::plan_read`], the prologue [`Log::read`] and [`Log::read_slices`] share.
struct ReadPlan {
    meta: ReadMeta,
    /// `None` when nothing is readable.
    span: Option<ReadSpan>,
}

/// What a read covers: from the batch containing the offset, at most `want` bytes of one segment.
struct ReadSpan {
    start: ReadStart,
    /// Position of the batch containing the offset.
    pos: u64,
    /// `max(first batch size, min(max_bytes, rest of the segment))`: at least one whole batch (KIP-74),
    /// never past the segment's committed size.
    want: u64,
}

/// Where a read starts, decided under the state lock ([`Log::start_read`]).
struct ReadStart {
    file: Arc<dyn IoFile>,
    /// Read-only `std::fs::File` of the same segment, for [`Log::read_slices`] only.
    slice_file: Option<Arc<File>>,
    pos: u64,
    end_pos: u64,
    limit: i64,
    /// The segment's next offset (the base of the next segment, or the log end offset).
    segment_end: i64,
}

impl Log {
    /// Position to start scanning segment `seg` for `offset`, and its data file.
    pub(super) fn locate(
        &self,
        seg: &Segment,
        offset: i64,
    ) -> Result<(Arc<dyn IoFile>, u64), StorageError> {
        let rel = offset - seg.base_offset;
        match &seg.active {
            Some(files) => Ok((
                files.log.clone(),
                lookup_position(&files.builder.offsets, rel),
            )),
            None => {
                let l = self.loaded(seg)?;
                Ok((l.log.clone(), lookup_position(&l.offsets, rel)))
            }
        }
    }

    /// Opens (once per segment) the read-only file [`Log::read_slices`] hands out.
    fn slice_file(&self, cell: &OnceLock<Arc<File>>, base: i64) -> Result<Arc<File>, StorageError> {
        if let Some(file) = cell.get() {
            return Ok(file.clone());
        }
        let path = segment_path(&self.dir(), base, LOG_SUFFIX);
        let file = Arc::new(File::open(&path).map_err(|e| self.io_err(&path, e))?);
        Ok(cell.get_or_init(|| file).clone())
    }

    /// The prologue of [`Log::read`] and [`Log::read_slices`]: range checks and the starting segment under
    /// the state lock ([`Log::start_read`]), then outside it the batch containing `offset` and how many bytes
    /// from there to cover.
    fn plan_read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        want_slice_file: bool,
    ) -> Result<ReadPlan, ReadError> {
        let (meta, mut start) = self.start_read(offset, upper_bound, want_slice_file)?;
        let mut from = offset;
        loop {
            let Some(at) = start else {
                return Ok(ReadPlan { meta, span: None });
            };
            if let Some((pos, first_size)) = self.first_batch(&at, from)? {
                let rest = at.end_pos - pos;
                let want = (max_bytes as u64).min(rest).max(first_size).min(rest);
                let span = Some(ReadSpan {
                    start: at,
                    pos,
                    want,
                });
                return Ok(ReadPlan { meta, span });
            }
            // No batch at or after `from` in this segment: compaction removed its tail (or all of it), and the
            // read goes on in the next segment, as Kafka's `LocalLog.read` does.
            if at.segment_end >= at.limit {
                return Ok(ReadPlan { meta, span: None });
            }
            from = at.segment_end;
            start = match self.start_read(from, upper_bound, want_slice_file) {
                Ok((_, next)) => next,
                Err(_) => None,
            };
        }
    }

    /// Under the state lock: range checks and the segment and position a read of `offset` starts at.
    fn start_read(
        &self,
        offset: i64,
        upper_bound: i64,
        want_slice_file: bool,
    ) -> Result<(ReadMeta, Option<ReadStart>), ReadError> {
        let st = self.state.lock();
        self.check_usable(&st)?;
        let meta = (
            st.log_start_offset,
            st.log_end_offset,
            st.high_watermark,
            Self::last_stable_offset_locked(&st),
        );
        if offset < st.log_start_offset || offset > st.log_end_offset {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: st.log_start_offset,
                log_end_offset: st.log_end_offset,
            });
        }
        let limit = upper_bound.min(st.log_end_offset);
        if offset >= limit {
            return Ok((meta, None));
        }
        let Some(seg) = st
            .segments
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| s.next_offset > offset)
            .or_else(|| {
                st.segments
                    .range(offset..)
                    .map(|(_, s)| s)
                    .find(|s| s.size > 0)
            })
        else {
            return Ok((meta, None));
        };
        let rel = offset.max(seg.base_offset) - seg.base_offset;
        let (file, pos, slice_file) = match &seg.active {
            Some(files) => {
                let slice_file = if want_slice_file {
                    Some(self.slice_file(&files.slice_file, seg.base_offset)?)
                } else {
                    None
                };
                (
                    files.log.clone(),
                    lookup_position(&files.builder.offsets, rel),
                    slice_file,
                )
            }
            None => {
                let l = self.loaded(seg)?;
                let slice_file = if want_slice_file {
                    Some(self.slice_file(&l.slice_file, seg.base_offset)?)
                } else {
                    None
                };
                (l.log.clone(), lookup_position(&l.offsets, rel), slice_file)
            }
        };
        Ok((
            meta,
            Some(ReadStart {
                file,
                slice_file,
                pos,
                end_pos: seg.size,
                limit,
                segment_end: seg.next_offset,
            }),
        ))
    }

    /// Skips batches that end before `offset` (at most an index interval's worth) and returns the position and
    /// size of the batch containing `offset`, or `None` when no batch below `limit` is there.
    fn first_batch(&self, start: &ReadStart, offset: i64) -> Result<Option<(u64, u64)>, ReadError> {
        let mut pos = start.pos;
        loop {
            let Some(h) =
                read_header_at(&*start.file, pos).map_err(|e| self.io_err(&self.dir(), e))?
            else {
                return Ok(None);
            };
            if pos >= start.end_pos {
                return Ok(None);
            }
            let header = BatchHeader::new(&h)
                .map_err(|e| StorageError::Corrupt(format!("{}: {e}", self.dir().display())))?;
            if header.base_offset() >= start.limit {
                return Ok(None);
            }
            if header.last_offset() >= offset {
                return Ok(Some((pos, header.size() as u64)));
            }
            pos += header.size() as u64;
        }
    }

    /// Reads whole batches starting with the batch containing `offset`, up to `max_bytes` but at least
    /// one batch (KIP-74), and never a batch starting at or after `upper_bound` (high watermark or last
    /// stable offset). One `pread` into one buffer.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<ReadResult, ReadError> {
        let plan = self.plan_read(offset, max_bytes, upper_bound, false)?;
        let result = |data: Bytes| ReadResult {
            data,
            log_start_offset: plan.meta.0,
            log_end_offset: plan.meta.1,
            high_watermark: plan.meta.2,
            last_stable_offset: plan.meta.3,
        };
        let Some(ReadSpan { start, pos, want }) = &plan.span else {
            return Ok(result(Bytes::new()));
        };
        let (pos, want) = (*pos, *want);
        let mut buf = Vec::new();
        start
            .file
            .read_at_into(&mut buf, want as usize, pos)
            .map_err(|e| self.io_err(&self.dir(), e))?;
        // Keep whole batches below the upper bound.
        let mut keep = 0usize;
        for (at, h) in Batches::new(&buf).map_while(Result::ok) {
            if h.base_offset() >= start.limit {
                break;
            }
            keep = at + h.size();
        }
        buf.truncate(keep);
        Ok(result(Bytes::from(buf)))
    }

    /// The same batches as [`Log::read`] with the same arguments (same offsets, KIP-74 and upper-bound rules),
    /// returned as ranges of the segment file instead of bytes, for `sendfile`: record bytes are not copied
    /// into user space. Batch boundaries are found by reading batch headers (61 bytes each) only.
    ///
    /// The ranges may outlive the segment's place in the log (retention, truncation); the file stays open. A
    /// truncation may leave a range reaching past the end of the file: a writer must check what it sends.
    pub fn read_slices(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<FileReadResult, ReadError> {
        let plan = self.plan_read(offset, max_bytes, upper_bound, true)?;
        let mut result = FileReadResult {
            slices: Vec::new(),
            log_start_offset: plan.meta.0,
            log_end_offset: plan.meta.1,
            high_watermark: plan.meta.2,
            last_stable_offset: plan.meta.3,
        };
        let Some(ReadSpan { start, pos, want }) = &plan.span else {
            return Ok(result);
        };
        let (pos, want) = (*pos, *want);
        // Always present: the plan was asked for it.
        let Some(slice_file) = start.slice_file.clone() else {
            return Ok(result);
        };
        // As `read` keeps whole batches of its buffer: walk headers while the whole batch lies within `want`.
        let mut at = 0u64;
        let mut keep = 0u64;
        while want - at >= RECORD_BATCH_OVERHEAD as u64 {
            let Some(h) =
                read_header_at(&*start.file, pos + at).map_err(|e| self.io_err(&self.dir(), e))?
            else {
                break;
            };
            let Ok(header) = BatchHeader::new(&h) else {
                break;
            };
            let size = header.size() as u64;
            if size > want - at || header.base_offset() >= start.limit {
                break;
            }
            at += size;
            keep = at;
        }
        if keep > 0 {
            let len = u32::try_from(keep).map_err(|_| {
                StorageError::Corrupt(format!("{}: read of {keep} bytes", self.dir().display()))
            })?;
            result.slices.push(FileSlice {
                file: slice_file,
                position: pos,
                len,
            });
        }
        Ok(result)
    }

    /// ListOffsets by timestamp: the first batch (from the log start) whose max timestamp is at least
    /// `timestamp_ms`; the offset is that batch's base offset (records are not decoded).
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        let mut after_base = i64::MIN;
        loop {
            let (file, mut pos, end_pos, lso) = {
                let st = self.state.lock();
                self.check_usable(&st)?;
                let lso = st.log_start_offset;
                let Some(seg) = st.segments.values().find(|s| {
                    s.base_offset > after_base
                        && s.next_offset > lso
                        && s.size > 0
                        && s.max_timestamp_ms >= timestamp_ms
                }) else {
                    return Ok(None);
                };
                after_base = seg.base_offset;
                let min_rel = lso - seg.base_offset;
                let start = |offsets: &[OffsetEntry], times: &[TimeEntry]| {
                    let from_rel = lookup_time(times, timestamp_ms)
                        .map(|t| i64::from(t.relative_offset))
                        .unwrap_or(0)
                        .max(min_rel);
                    lookup_position(offsets, from_rel)
                };
                let (file, pos) = match &seg.active {
                    Some(f) => (f.log.clone(), start(&f.builder.offsets, &f.builder.times)),
                    None => {
                        let l = self.loaded(seg)?;
                        (l.log.clone(), start(&l.offsets, &l.times))
                    }
                };
                (file, pos, seg.size, lso)
            };
            while pos < end_pos {
                let Some(h) =
                    read_header_at(&*file, pos).map_err(|e| self.io_err(&self.dir(), e))?
                else {
                    break;
                };
                let h = BatchHeader::new(&h).map_err(|e| StorageError::Corrupt(e.to_string()))?;
                if h.max_timestamp() >= timestamp_ms && h.last_offset() >= lso {
                    let epoch = h.partition_leader_epoch();
                    let (ts, offset) = self
                        .first_record_at_or_after(&*file, pos, &h, timestamp_ms, lso)?
                        .unwrap_or((h.max_timestamp(), h.base_offset().max(lso)));
                    return Ok(Some(TimestampOffset {
                        timestamp_ms: ts,
                        offset,
                        leader_epoch: (epoch >= 0).then_some(epoch),
                    }));
                }
                pos += h.size() as u64;
            }
        }
    }

    /// Reads the whole batch at `pos` and returns `(timestamp, offset)` of its first record with a
    /// timestamp >= `min_timestamp_ms` and an offset >= `min_offset`, when its records are readable
    /// (uncompressed, CreateTime); `None` otherwise (the caller falls back to the batch).
    fn first_record_at_or_after(
        &self,
        file: &dyn IoFile,
        pos: u64,
        header: &BatchHeader<'_>,
        min_timestamp_ms: i64,
        min_offset: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        if header.is_log_append_time() || header.compression() != 0 {
            return Ok(None);
        }
        let mut buf = Vec::new();
        file.read_at_into(&mut buf, header.size(), pos)
            .map_err(|e| self.io_err(&self.dir(), e))?;
        let base = header.base_offset();
        Ok(batch::record_timestamps(&buf).and_then(|mut records| {
            records
                .find(|&(delta, ts)| ts >= min_timestamp_ms && base + delta >= min_offset)
                .map(|(delta, ts)| (ts, base + delta))
        }))
    }

    /// KIP-734: the largest timestamp in the log and the offset of the first record holding it (the
    /// batch's first offset when its records are compressed or under LogAppendTime); `None` for an
    /// empty log.
    pub fn max_timestamp_offset(&self) -> Result<Option<TimestampOffset>, StorageError> {
        let (file, mut pos, end_pos, ts, batch_offset, lso) = {
            let st = self.state.lock();
            self.check_usable(&st)?;
            let lso = st.log_start_offset;
            let mut best: Option<&Segment> = None;
            for s in st
                .segments
                .values()
                .filter(|s| s.size > 0 && s.next_offset > lso)
            {
                if s.max_timestamp_ms >= 0
                    && best.is_none_or(|b| s.max_timestamp_ms > b.max_timestamp_ms)
                {
                    best = Some(s);
                }
            }
            let Some(seg) = best else { return Ok(None) };
            let batch_offset = seg.offset_of_max_timestamp.max(lso);
            let (file, pos) = self.locate(seg, batch_offset)?;
            (file, pos, seg.size, seg.max_timestamp_ms, batch_offset, lso)
        };
        let mut found = (ts, batch_offset);
        while pos < end_pos {
            let Some(h) = read_header_at(&*file, pos).map_err(|e| self.io_err(&self.dir(), e))?
            else {
                break;
            };
            let h = BatchHeader::new(&h).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            if h.last_offset() >= batch_offset {
                if h.max_timestamp() == ts {
                    if let Some(record) = self.first_record_at_or_after(&*file, pos, &h, ts, lso)? {
                        found = record;
                    }
                }
                break;
            }
            pos += h.size() as u64;
        }
        let epoch = self.state.lock().epochs.epoch_for_offset(found.1);
        Ok(Some(TimestampOffset {
            timestamp_ms: found.0,
            offset: found.1,
            leader_epoch: epoch,
        }))
    }
}
