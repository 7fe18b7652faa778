//! The records of `__consumer_offsets`, encoded exactly as Apache Kafka encodes them so that tools reading that
//! topic understand it: OffsetCommitKey (key version 1) / OffsetCommitValue (v3) and GroupMetadataKey (key
//! version 2) / GroupMetadataValue (v3), written from the schemas in Kafka's
//! `group-coordinator/src/main/resources/common/message/`. A null value is a tombstone. A commit with an explicit
//! expiry (OffsetCommit v2-v4's retention time) is written as OffsetCommitValue v1, the only version that has one.
//!
//! Every value version 0-3 is read (older Kafka brokers wrote them); flexible v4 values and the record types of
//! the new consumer-group protocol (key versions 3 and up) are recognised and skipped.

use bytes::{BufMut, Bytes, BytesMut};

/// Key version of an offset commit (0 and 1 both mean OffsetCommitKey; Kafka writes 1).
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of group metadata.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// The OffsetCommitValue version we write (offset, leader epoch, metadata, commit timestamp).
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// The GroupMetadataValue version we write (with group instance ids, KIP-345).
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// Why a record of `__consumer_offsets` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes end before the schema does.
    #[error("record truncated while reading {0}")]
    Truncated(&'static str),
    /// A string is not UTF-8 or a length is negative where it may not be.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A key without its version prefix.
    #[error("record without a key")]
    MissingKey,
}

/// A committed offset (OffsetCommitValue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    /// The committed offset.
    pub offset: i64,
    /// The leader epoch of the committed offset, -1 when unknown.
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: String,
    /// When the commit was made.
    pub commit_timestamp_ms: i64,
    /// Explicit expiry (value v1 only, from OffsetCommit v2-v4's retention time); -1 when none.
    pub expire_timestamp_ms: i64,
}

/// One member as stored in GroupMetadataValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadataValue {
    /// Member id.
    pub member_id: String,
    /// Static membership id (KIP-345).
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// The member's metadata for the selected protocol.
    pub subscription: Bytes,
    /// The member's assignment.
    pub assignment: Bytes,
}

/// A classic group's persisted state (GroupMetadataValue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    /// Protocol type (`consumer`, `connect`, ...); empty for a group that only stores offsets.
    pub protocol_type: String,
    /// Generation id.
    pub generation: i32,
    /// The selected protocol, if any.
    pub protocol: Option<String>,
    /// The leader's member id, if any.
    pub leader: Option<String>,
    /// When the group entered its current state.
    pub current_state_timestamp_ms: i64,
    /// The members and their assignments.
    pub members: Vec<MemberMetadataValue>,
}

/// One record of `__consumer_offsets`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorRecord {
    /// A committed offset; `None` is a tombstone (offset deleted or expired).
    OffsetCommit {
        /// Group id.
        group_id: String,
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
        /// The value, `None` for a tombstone.
        value: Option<OffsetCommitValue>,
    },
    /// A group's metadata; `None` is a tombstone (group deleted).
    GroupMetadata {
        /// Group id.
        group_id: String,
        /// The value, `None` for a tombstone.
        value: Option<GroupMetadataValue>,
    },
}

impl CoordinatorRecord {
    /// The group this record belongs to.
    pub fn group_id(&self) -> &str {
        match self {
            CoordinatorRecord::OffsetCommit { group_id, .. }
            | CoordinatorRecord::GroupMetadata { group_id, .. } => group_id,
        }
    }

    /// Encodes the record as (key, value) bytes; a tombstone's value is `None`.
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        match self {
            CoordinatorRecord::OffsetCommit {
                group_id,
                topic,
                partition,
                value,
            } => {
                key.put_i16(OFFSET_COMMIT_KEY_VERSION);
                put_string(&mut key, group_id);
                put_string(&mut key, topic);
                key.put_i32(*partition);
                let value = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    if v.expire_timestamp_ms >= 0 {
                        // Only value v1 carries an explicit expiry (OffsetCommit v2-v4 retention time).
                        b.put_i16(1);
                        b.put_i64(v.offset);
                        put_string(&mut b, &v.metadata);
                        b.put_i64(v.commit_timestamp_ms);
                        b.put_i64(v.expire_timestamp_ms);
                    } else {
                        b.put_i16(OFFSET_COMMIT_VALUE_VERSION);
                        b.put_i64(v.offset);
                        b.put_i32(v.leader_epoch);
                        put_string(&mut b, &v.metadata);
                        b.put_i64(v.commit_timestamp_ms);
                    }
                    b.freeze()
                });
                (key.freeze(), value)
            }
            CoordinatorRecord::GroupMetadata { group_id, value } => {
                key.put_i16(GROUP_METADATA_KEY_VERSION);
                put_string(&mut key, group_id);
                let value = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_i16(GROUP_METADATA_VALUE_VERSION);
                    put_string(&mut b, &v.protocol_type);
                    b.put_i32(v.generation);
                    put_nullable_string(&mut b, v.protocol.as_deref());
                    put_nullable_string(&mut b, v.leader.as_deref());
                    b.put_i64(v.current_state_timestamp_ms);
                    b.put_i32(len_i32(v.members.len()));
                    for m in &v.members {
                        put_string(&mut b, &m.member_id);
                        put_nullable_string(&mut b, m.group_instance_id.as_deref());
                        put_string(&mut b, &m.client_id);
                        put_string(&mut b, &m.client_host);
                        b.put_i32(m.rebalance_timeout_ms);
                        b.put_i32(m.session_timeout_ms);
                        put_bytes(&mut b, &m.subscription);
                        put_bytes(&mut b, &m.assignment);
                    }
                    b.freeze()
                });
                (key.freeze(), value)
            }
        }
    }

    /// Decodes a record read from `__consumer_offsets`. `Ok(None)` for record types this coordinator does not
    /// use (the consumer-group protocol's keys, version 3 and up) and for flexible (v4+) values it cannot read.
    pub fn decode(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<Option<CoordinatorRecord>, RecordError> {
        let key = key.ok_or(RecordError::MissingKey)?;
        let mut k = Reader(key);
        let key_version = k.i16("key version")?;
        match key_version {
            0 | 1 => {
                let group_id = k.string("group")?;
                let topic = k.string("topic")?;
                let partition = k.i32("partition")?;
                let value = match value {
                    None => None,
                    Some(v) => match decode_offset_value(v)? {
                        Some(v) => Some(v),
                        None => return Ok(None),
                    },
                };
                Ok(Some(CoordinatorRecord::OffsetCommit {
                    group_id,
                    topic,
                    partition,
                    value,
                }))
            }
            2 => {
                let group_id = k.string("group")?;
                let value = match value {
                    None => None,
                    Some(v) => match decode_group_value(v)? {
                        Some(v) => Some(v),
                        None => return Ok(None),
                    },
                };
                Ok(Some(CoordinatorRecord::GroupMetadata { group_id, value }))
            }
            _ => Ok(None),
        }
    }
}

fn decode_offset_value(v: &[u8]) -> Result<Option<OffsetCommitValue>, RecordError> {
    let mut r = Reader(v);
    let version = r.i16("value version")?;
    if !(0..=3).contains(&version) {
        return Ok(None);
    }
    let offset = r.i64("offset")?;
    let leader_epoch = if version >= 3 {
        r.i32("leader epoch")?
    } else {
        -1
    };
    let metadata = r.string("metadata")?;
    let commit_timestamp_ms = r.i64("commit timestamp")?;
    let expire_timestamp_ms = if version == 1 {
        r.i64("expire timestamp")?
    } else {
        -1
    };
    Ok(Some(OffsetCommitValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
        expire_timestamp_ms,
    }))
}

fn decode_group_value(v: &[u8]) -> Result<Option<GroupMetadataValue>, RecordError> {
    let mut r = Reader(v);
    let version = r.i16("value version")?;
    if !(0..=3).contains(&version) {
        return Ok(None);
    }
    let protocol_type = r.string("protocol type")?;
    let generation = r.i32("generation")?;
    let protocol = r.nullable_string("protocol")?;
    let leader = r.nullable_string("leader")?;
    let current_state_timestamp_ms = if version >= 2 {
        r.i64("current state timestamp")?
    } else {
        -1
    };
    let count = r.i32("member count")?;
    let count = usize::try_from(count).map_err(|_| RecordError::Malformed("member count"))?;
    // Each member takes at least 20 bytes: bound the allocation by what the value can hold.
    let mut members = Vec::with_capacity(count.min(r.0.len() / 20));
    for _ in 0..count {
        let member_id = r.string("member id")?;
        let group_instance_id = if version >= 3 {
            r.nullable_string("group instance id")?
        } else {
            None
        };
        let client_id = r.string("client id")?;
        let client_host = r.string("client host")?;
        let rebalance_timeout_ms = if version >= 1 {
            r.i32("rebalance timeout")?
        } else {
            -1
        };
        let session_timeout_ms = r.i32("session timeout")?;
        let subscription = r.bytes("subscription")?;
        let assignment = r.bytes("assignment")?;
        members.push(MemberMetadataValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                session_timeout_ms
            } else {
                rebalance_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(Some(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    }))
}

fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn put_string(b: &mut BytesMut, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    b.put_i16(len as i16);
    b.put_slice(&s.as_bytes()[..len]);
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    b.put_i32(len_i32(s.len()));
    b.put_slice(s);
}

/// A bounds-checked big-endian reader over one key or value.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, RecordError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, RecordError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn nullable_string(&mut self, what: &'static str) -> Result<Option<String>, RecordError> {
        let len = self.i16(what)?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize, what)?;
        std::str::from_utf8(b)
            .map(|s| Some(s.to_string()))
            .map_err(|_| RecordError::Malformed(what))
    }
    fn string(&mut self, what: &'static str) -> Result<String, RecordError> {
        self.nullable_string(what)?
            .ok_or(RecordError::Malformed(what))
    }
    fn bytes(&mut self, what: &'static str) -> Result<Bytes, RecordError> {
        let len = self.i32(what)?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize, what)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_commit_round_trips_in_kafkas_layout() {
        let record = CoordinatorRecord::OffsetCommit {
            group_id: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(OffsetCommitValue {
                offset: 42,
                leader_epoch: 7,
                metadata: "m".into(),
                commit_timestamp_ms: 1000,
                expire_timestamp_ms: -1,
            }),
        };
        let (key, value) = record.encode();
        // OffsetCommitKey v1: version, group, topic, partition.
        assert_eq!(&key[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        let value = value.expect("value");
        // OffsetCommitValue v3: version, offset, leaderEpoch, metadata, commitTimestamp.
        let mut expected = vec![0, 3];
        expected.extend_from_slice(&42i64.to_be_bytes());
        expected.extend_from_slice(&7i32.to_be_bytes());
        expected.extend_from_slice(&[0, 1, b'm']);
        expected.extend_from_slice(&1000i64.to_be_bytes());
        assert_eq!(&value[..], &expected[..]);
        assert_eq!(
            CoordinatorRecord::decode(Some(&key), Some(&value)),
            Ok(Some(record))
        );
    }

    #[test]
    fn group_metadata_round_trips_and_tombstones_decode() {
        let record = CoordinatorRecord::GroupMetadata {
            group_id: "group".into(),
            value: Some(GroupMetadataValue {
                protocol_type: "consumer".into(),
                generation: 5,
                protocol: Some("range".into()),
                leader: Some("m1".into()),
                current_state_timestamp_ms: 99,
                members: vec![MemberMetadataValue {
                    member_id: "m1".into(),
                    group_instance_id: Some("i1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"asg"),
                }],
            }),
        };
        let (key, value) = record.encode();
        assert_eq!(&key[..4], &[0, 2, 0, 5]);
        assert_eq!(
            CoordinatorRecord::decode(Some(&key), value.as_deref()),
            Ok(Some(record))
        );
        assert_eq!(
            CoordinatorRecord::decode(Some(&key), None),
            Ok(Some(CoordinatorRecord::GroupMetadata {
                group_id: "group".into(),
                value: None
            }))
        );
    }

    #[test]
    fn older_value_versions_and_foreign_keys() {
        // OffsetCommitValue v1 carries an expire timestamp and no leader epoch.
        let mut v = vec![0, 1];
        v.extend_from_slice(&10i64.to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&5i64.to_be_bytes());
        v.extend_from_slice(&6i64.to_be_bytes());
        let key = [0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 0];
        match CoordinatorRecord::decode(Some(&key), Some(&v)) {
            Ok(Some(CoordinatorRecord::OffsetCommit { value: Some(v), .. })) => {
                assert_eq!(
                    (v.offset, v.leader_epoch, v.expire_timestamp_ms),
                    (10, -1, 6)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // Key version 3 is a consumer-group (KIP-848) record: not ours.
        assert_eq!(
            CoordinatorRecord::decode(Some(&[0, 3, 0, 0]), None),
            Ok(None)
        );
        // Truncation is an error, not a panic.
        assert!(CoordinatorRecord::decode(Some(&key[..5]), None).is_err());
        assert!(CoordinatorRecord::decode(None, None).is_err());
    }
}
