//! `meta.properties`: the identity file Kafka writes at the top of every log directory (and the metadata log
//! directory) when `kafka-storage.sh format` prepares a node's storage.
//!
//! The format is Kafka's (`MetaProperties` version 1, KRaft):
//!
//! ```text
//! #
//! #Written by Sluice
//! version=1
//! cluster.id=<22-character URL-safe base64 UUID>
//! node.id=<node id>
//! directory.id=<22-character URL-safe base64 UUID, one per directory>
//! ```
//!
//! A file is written whole or not at all: to `meta.properties.tmp`, fsynced, renamed over `meta.properties`, and
//! the directory fsynced.
//!
//! [`format_dirs`] / [`format_dir`] are `sluice storage format`; [`check_or_create`] is what a starting node runs:
//! every directory must carry the same cluster id and this node's id, and only the embedded single node may
//! create the files itself.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file's name inside each directory.
pub const META_PROPERTIES_FILE: &str = "meta.properties";

/// The only `version` Sluice reads and writes (Kafka's KRaft version; version 0 is ZooKeeper mode).
pub const META_PROPERTIES_VERSION: u32 = 1;

/// The contents of one directory's `meta.properties`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    /// `cluster.id`.
    pub cluster_id: String,
    /// `node.id`.
    pub node_id: i32,
    /// `directory.id`; absent in files written before Kafka 3.7 (and by older Sluice).
    pub directory_id: Option<String>,
}

impl MetaProperties {
    /// The file text, in Kafka's key names.
    pub fn to_file_text(&self) -> String {
        let mut text = format!(
            "#\n#Written by Sluice\nversion={META_PROPERTIES_VERSION}\ncluster.id={}\nnode.id={}\n",
            self.cluster_id, self.node_id
        );
        if let Some(id) = &self.directory_id {
            text.push_str(&format!("directory.id={id}\n"));
        }
        text
    }
}

impl std::fmt::Display for MetaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{{cluster.id={}, node.id={}, directory.id={}}}",
            self.cluster_id,
            self.node_id,
            self.directory_id.as_deref().unwrap_or("(unset)")
        )
    }
}

/// Why storage could not be formatted or checked. The messages follow Kafka's where Kafka has one.
#[derive(Debug, thiserror::Error)]
pub enum MetaPropertiesError {
    /// Reading, writing or creating a file or directory failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done, e.g. "Unable to create storage directory".
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A `meta.properties` file exists but cannot be used (syntax, missing key, unsupported version).
    #[error("Invalid meta.properties {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `format` found a formatted directory and was not told to ignore it.
    #[error(
        "Log directory {} is already formatted. Use --ignore-formatted to ignore this directory and format the others.",
        dir.display()
    )]
    AlreadyFormatted {
        /// The directory.
        dir: PathBuf,
    },
    /// The cluster id given to `format` is not a base64 UUID.
    #[error("Cluster ID string {id} does not appear to be a valid UUID: {reason}")]
    InvalidClusterId {
        /// The id given.
        id: String,
        /// Why it does not decode (Kafka's `Uuid.fromString` message).
        reason: String,
    },
    /// A negative node id.
    #[error("You must specify a valid non-negative node ID (got {0}).")]
    InvalidNodeId(i32),
    /// A directory belongs to another node.
    #[error(
        "Stored node id {found} doesn't match previous node id {expected} in {}. If you moved your data, make sure your configured node id matches. If you intend to create a new node, you should remove all data in your data directories.",
        path.display()
    )]
    NodeIdMismatch {
        /// The `meta.properties` file.
        path: PathBuf,
        /// The configured node id.
        expected: i32,
        /// The node id in the file.
        found: i32,
    },
    /// A directory belongs to another cluster (than the configured id, or than another directory).
    #[error("Invalid cluster.id in: {}. Expected {expected}, but read {found}", path.display())]
    ClusterIdMismatch {
        /// The `meta.properties` file.
        path: PathBuf,
        /// The configured cluster id, or the one the first formatted directory holds.
        expected: String,
        /// The cluster id in the file.
        found: String,
    },
    /// Two directories claim the same `directory.id` (one was copied from the other).
    #[error("Duplicate directory.id {id} in {} and {}", first.display(), second.display())]
    DuplicateDirectoryId {
        /// The id.
        id: String,
        /// One file holding it.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// A directory has not been formatted and this node may not format it itself.
    #[error("No meta.properties found in {} (have you run `sluice storage format`?)", dir.display())]
    NotFormatted {
        /// The directory.
        dir: PathBuf,
    },
    /// No directory was given.
    #[error("You must specify at least one directory to format")]
    NoDirectories,
}

const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Kafka's `Uuid.toString()`: the 16 bytes (most significant half first) in URL-safe base64 without padding.
pub fn encode_uuid(bytes: [u8; 16]) -> String {
    let mut out = String::with_capacity(22);
    let mut bits: u32 = 0;
    let mut nbits = 0;
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(BASE64_URL[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(BASE64_URL[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

/// Kafka's `Uuid.fromString`: URL-safe base64 (padding optional) of exactly 16 bytes. The error is Kafka's
/// message (Java's for a bad character).
pub fn decode_uuid(text: &str) -> Result<[u8; 16], String> {
    if text.len() > 24 {
        let prefix: String = text.chars().take(24).collect();
        return Err(format!(
            "Input string with prefix `{prefix}` is too long to be decoded as a base64 UUID"
        ));
    }
    let unpadded = text.trim_end_matches('=');
    let padding = text.len() - unpadded.len();
    if padding > 2 || (padding > 0 && !text.len().is_multiple_of(4)) {
        return Err("Input byte array has incorrect ending byte".to_string());
    }
    let mut bytes = Vec::with_capacity(18);
    let mut bits: u32 = 0;
    let mut nbits = 0;
    for c in unpadded.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            other => return Err(format!("Illegal base64 character {other:x}")),
        };
        bits = (bits << 6) | u32::from(value);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push((bits >> nbits) as u8);
        }
    }
    if unpadded.len() % 4 == 1 {
        return Err("Last unit does not have enough valid bits".to_string());
    }
    <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "Input string `{text}` decoded as {} bytes, which is not equal to the expected 16 bytes of a base64-encoded UUID",
            bytes.len()
        )
    })
}

/// Kafka's reserved ids: `ZERO_UUID` (0), `ONE_UUID`/`METADATA_TOPIC_ID` (1), and the directory ids
/// `UNASSIGNED` (0), `LOST` (1), `MIGRATING` (2); a random id is never one of them.
fn is_reserved(bytes: &[u8; 16]) -> bool {
    bytes[..15].iter().all(|b| *b == 0) && bytes[15] <= 2
}

/// A new random id as Kafka's `Uuid.randomUuid().toString()` prints it: 22 characters of URL-safe base64,
/// never starting with `-` (it would read as a command-line option) and never a reserved id.
pub fn random_uuid() -> String {
    loop {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        if is_reserved(&bytes) {
            continue;
        }
        let text = encode_uuid(bytes);
        if !text.starts_with('-') {
            return text;
        }
    }
}

/// Checks a cluster id as `kafka-storage.sh format` does (it must be a base64 UUID) and returns its canonical
/// 22-character form.
pub fn validate_cluster_id(id: &str) -> Result<String, MetaPropertiesError> {
    decode_uuid(id)
        .map(encode_uuid)
        .map_err(|reason| MetaPropertiesError::InvalidClusterId {
            id: id.to_string(),
            reason,
        })
}

/// Reads `dir/meta.properties`: `Ok(None)` when the file does not exist (the directory is not formatted).
pub fn read(dir: &Path) -> Result<Option<MetaProperties>, MetaPropertiesError> {
    let path = dir.join(META_PROPERTIES_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(MetaPropertiesError::Io {
                context: "Unable to read",
                path,
                source,
            })
        }
    };
    parse(&text, &path).map(Some)
}

/// Parses the text of a `meta.properties` file (`path` is only for messages).
pub fn parse(text: &str, path: &Path) -> Result<MetaProperties, MetaPropertiesError> {
    let invalid = |reason: String| MetaPropertiesError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let (mut version, mut cluster_id, mut node_id, mut directory_id) = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (key, value) = line
            .split_once(['=', ':'])
            .ok_or_else(|| invalid(format!("`{line}` is not key=value")))?;
        let value = value.trim();
        match key.trim() {
            "version" => {
                version = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| invalid(format!("bad version `{value}`")))?,
                )
            }
            "cluster.id" => cluster_id = Some(value.to_string()),
            "node.id" => {
                node_id = Some(
                    value
                        .parse::<i32>()
                        .map_err(|_| invalid(format!("bad node.id `{value}`")))?,
                )
            }
            "directory.id" => {
                decode_uuid(value)
                    .map_err(|reason| invalid(format!("bad directory.id `{value}`: {reason}")))?;
                directory_id = Some(value.to_string());
            }
            // Kafka's ZooKeeper-era key and anything a newer writer adds are not ours to judge.
            _ => {}
        }
    }
    match version {
        Some(META_PROPERTIES_VERSION) => {}
        Some(other) => {
            return Err(invalid(format!(
                "unsupported version {other} (Sluice reads version 1, KRaft)"
            )))
        }
        None => return Err(invalid("no version".to_string())),
    }
    let cluster_id = cluster_id
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("no cluster.id".to_string()))?;
    let node_id = node_id.ok_or_else(|| invalid("no node.id".to_string()))?;
    Ok(MetaProperties {
        cluster_id,
        node_id,
        directory_id,
    })
}

/// Writes `dir/meta.properties` atomically (temporary file, fsync, rename, directory fsync), creating `dir`.
pub fn write(dir: &Path, properties: &MetaProperties) -> Result<(), MetaPropertiesError> {
    let io_err = |context: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| MetaPropertiesError::Io {
            context,
            path,
            source,
        }
    };
    fs::create_dir_all(dir).map_err(io_err("Unable to create storage directory", dir))?;
    let path = dir.join(META_PROPERTIES_FILE);
    let tmp = dir.join(format!("{META_PROPERTIES_FILE}.tmp"));
    let mut file = File::create(&tmp).map_err(io_err("Unable to create", &tmp))?;
    file.write_all(properties.to_file_text().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err("Unable to write", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err("Unable to rename into place", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("Unable to fsync directory", dir))?;
    Ok(())
}

/// Formats one directory: writes its `meta.properties` with `cluster_id` (which must be a base64 UUID),
/// `node_id` and a new `directory.id`. Returns what was written, or `None` when the directory was already
/// formatted and `ignore_formatted` is set (it must still belong to this cluster and node).
pub fn format_dir(
    dir: &Path,
    cluster_id: &str,
    node_id: i32,
    ignore_formatted: bool,
) -> Result<Option<MetaProperties>, MetaPropertiesError> {
    let mut outcome = format_dirs(&[dir.to_path_buf()], cluster_id, node_id, ignore_formatted)?;
    Ok(outcome.pop().and_then(|(_, written)| written))
}

/// Formats several directories as one `format` command: nothing is written unless every directory passes
/// (a formatted one is refused unless `ignore_formatted`; one formatted for another cluster or node is always
/// refused). Returns each directory (sorted, duplicates removed) with what was written to it, `None` for one
/// left as it was.
pub fn format_dirs(
    dirs: &[PathBuf],
    cluster_id: &str,
    node_id: i32,
    ignore_formatted: bool,
) -> Result<Vec<(PathBuf, Option<MetaProperties>)>, MetaPropertiesError> {
    if node_id < 0 {
        return Err(MetaPropertiesError::InvalidNodeId(node_id));
    }
    let cluster_id = validate_cluster_id(cluster_id)?;
    let mut dirs: Vec<PathBuf> = dirs.to_vec();
    dirs.sort();
    dirs.dedup();
    if dirs.is_empty() {
        return Err(MetaPropertiesError::NoDirectories);
    }
    let existing = read_all(&dirs)?;
    verify(&existing, node_id, Some(&cluster_id))?;
    if !ignore_formatted {
        if let Some((dir, _)) = existing.iter().find(|(_, p)| p.is_some()) {
            return Err(MetaPropertiesError::AlreadyFormatted { dir: dir.clone() });
        }
    }
    let mut used_ids: Vec<String> = existing
        .iter()
        .filter_map(|(_, p)| p.as_ref().and_then(|p| p.directory_id.clone()))
        .collect();
    let mut outcome = Vec::with_capacity(dirs.len());
    for (dir, current) in existing {
        if current.is_some() {
            outcome.push((dir, None));
            continue;
        }
        let directory_id = loop {
            let id = random_uuid();
            if !used_ids.contains(&id) {
                break id;
            }
        };
        used_ids.push(directory_id.clone());
        let properties = MetaProperties {
            cluster_id: cluster_id.clone(),
            node_id,
            directory_id: Some(directory_id),
        };
        write(&dir, &properties)?;
        outcome.push((dir, Some(properties)));
    }
    Ok(outcome)
}

/// Each directory with its `meta.properties`, if any.
fn read_all(
    dirs: &[PathBuf],
) -> Result<Vec<(PathBuf, Option<MetaProperties>)>, MetaPropertiesError> {
    dirs.iter()
        .map(|dir| Ok((dir.clone(), read(dir)?)))
        .collect()
}

/// Kafka's `MetaPropertiesEnsemble.verify`: every formatted directory holds this node id, one cluster id (the
/// expected one when given, else the first directory's), and a directory id no other directory holds.
fn verify(
    existing: &[(PathBuf, Option<MetaProperties>)],
    node_id: i32,
    expected_cluster_id: Option<&str>,
) -> Result<(), MetaPropertiesError> {
    let mut expected = expected_cluster_id.map(str::to_string);
    let mut seen_ids: Vec<(&str, &Path)> = Vec::new();
    for (dir, properties) in existing {
        let Some(p) = properties else { continue };
        let path = dir.join(META_PROPERTIES_FILE);
        if p.node_id != node_id {
            return Err(MetaPropertiesError::NodeIdMismatch {
                path,
                expected: node_id,
                found: p.node_id,
            });
        }
        match &expected {
            Some(e) if *e != p.cluster_id => {
                return Err(MetaPropertiesError::ClusterIdMismatch {
                    path,
                    expected: e.clone(),
                    found: p.cluster_id.clone(),
                })
            }
            Some(_) => {}
            None => expected = Some(p.cluster_id.clone()),
        }
        if let Some(id) = &p.directory_id {
            if let Some((_, first)) = seen_ids.iter().find(|(seen, _)| seen == id) {
                return Err(MetaPropertiesError::DuplicateDirectoryId {
                    id: id.clone(),
                    first: first.join(META_PROPERTIES_FILE),
                    second: path,
                });
            }
            seen_ids.push((id, dir));
        }
    }
    Ok(())
}

/// What a starting node runs over its log directories and metadata directory: reads every directory's
/// `meta.properties` and returns the cluster id they agree on.
///
/// - A file with another node id, or a cluster id other than the configured one (or than another directory's),
///   is an error naming both.
/// - No directory formatted: with `allow_create` (the embedded single node, which has nobody to agree a cluster
///   id with) every directory is formatted with the configured cluster id or a new random one; without it the
///   error asks for `sluice storage format`.
/// - Some formatted, some not (a new, empty log directory): the empty ones are formatted with the agreed cluster
///   id when `allow_create`; otherwise the error names the first one (`sluice storage format --ignore-formatted`
///   formats it).
pub fn check_or_create(
    dirs: &[PathBuf],
    node_id: i32,
    configured_cluster_id: Option<&str>,
    allow_create: bool,
) -> Result<String, MetaPropertiesError> {
    if node_id < 0 {
        return Err(MetaPropertiesError::InvalidNodeId(node_id));
    }
    let mut unique: Vec<PathBuf> = dirs.to_vec();
    unique.sort();
    unique.dedup();
    if unique.is_empty() {
        return Err(MetaPropertiesError::NoDirectories);
    }
    let existing = read_all(&unique)?;
    verify(&existing, node_id, configured_cluster_id)?;
    let agreed = configured_cluster_id.map(str::to_string).or_else(|| {
        existing
            .iter()
            .find_map(|(_, p)| p.as_ref().map(|p| p.cluster_id.clone()))
    });
    let missing: Vec<&PathBuf> = existing
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(dir, _)| dir)
        .collect();
    if missing.is_empty() {
        // Every directory is formatted and they agree; `agreed` is set because at least one exists.
        return Ok(agreed.unwrap_or_default());
    }
    if !allow_create {
        // Report in the caller's order, so the metadata directory (usually listed first) is named first.
        let first = dirs
            .iter()
            .find(|d| missing.contains(d))
            .unwrap_or(missing[0]);
        return Err(MetaPropertiesError::NotFormatted { dir: first.clone() });
    }
    let cluster_id = agreed.unwrap_or_else(random_uuid);
    let mut used_ids: Vec<String> = existing
        .iter()
        .filter_map(|(_, p)| p.as_ref().and_then(|p| p.directory_id.clone()))
        .collect();
    for dir in missing {
        let directory_id = loop {
            let id = random_uuid();
            if !used_ids.contains(&id) {
                break id;
            }
        };
        used_ids.push(directory_id.clone());
        write(
            dir,
            &MetaProperties {
                cluster_id: cluster_id.clone(),
                node_id,
                directory_id: Some(directory_id),
            },
        )?;
    }
    Ok(cluster_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "MkU3OEVBNTcwNTJENDM2Qg";

    fn dirs(root: &Path, n: usize) -> Vec<PathBuf> {
        (0..n).map(|i| root.join(format!("d{i}"))).collect()
    }

    #[test]
    fn random_uuids_are_22_url_safe_characters_that_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let id = random_uuid();
            assert_eq!(id.len(), 22, "{id}");
            assert!(!id.starts_with('-'), "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
            assert_eq!(validate_cluster_id(&id).unwrap(), id);
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn uuid_text_matches_kafkas_encoding() {
        // Kafka: new Uuid(0x123456789abcdef0L, 0x0fedcba987654321L).toString()
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&0x1234_5678_9abc_def0_u64.to_be_bytes());
        bytes[8..].copy_from_slice(&0x0fed_cba9_8765_4321_u64.to_be_bytes());
        let text = encode_uuid(bytes);
        assert_eq!(text, "EjRWeJq83vAP7cuph2VDIQ");
        assert_eq!(decode_uuid(&text).unwrap(), bytes);
        // Padding is accepted and normalised away, as Java's URL decoder does.
        assert_eq!(validate_cluster_id(&format!("{text}==")).unwrap(), text);
        assert!(is_reserved(&[0; 16]));
        let mut one = [0u8; 16];
        one[15] = 1;
        assert!(is_reserved(&one));
    }

    #[test]
    fn invalid_cluster_ids_are_refused_with_kafkas_messages() {
        for (bad, expected) in [
            ("my-cluster", "decoded as 7 bytes"),
            ("abc.def", "Illegal base64 character 2e"),
            (
                "MkU3OEVBNTcwNTJENDM2QgMkU3OEVB",
                "Input string with prefix `MkU3OEVBNTcwNTJENDM2QgMk` is too long",
            ),
            ("", "decoded as 0 bytes"),
            (
                "MkU3OEVBNTcwNTJENDM2Q",
                "Last unit does not have enough valid bits",
            ),
        ] {
            let err = validate_cluster_id(bad).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!(
                    "Cluster ID string {bad} does not appear to be a valid UUID: "
                )),
                "{text}"
            );
            assert!(text.contains(expected), "{bad}: {text}");
        }
    }

    #[test]
    fn format_writes_kafkas_file_and_read_returns_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("logs");
        let written = format_dir(&dir, CLUSTER, 3, false).unwrap().unwrap();
        assert_eq!(written.cluster_id, CLUSTER);
        assert_eq!(written.node_id, 3);
        let text = fs::read_to_string(dir.join(META_PROPERTIES_FILE)).unwrap();
        assert!(text.contains("version=1\n"), "{text}");
        assert!(text.contains(&format!("cluster.id={CLUSTER}\n")), "{text}");
        assert!(text.contains("node.id=3\n"), "{text}");
        let directory_id = written.directory_id.clone().unwrap();
        assert!(
            text.contains(&format!("directory.id={directory_id}\n")),
            "{text}"
        );
        assert!(!dir.join("meta.properties.tmp").exists());
        assert_eq!(read(&dir).unwrap(), Some(written));
        assert_eq!(read(&root.path().join("nothing")).unwrap(), None);
    }

    #[test]
    fn format_refuses_a_formatted_dir_unless_told_to_ignore_it() {
        let root = tempfile::tempdir().unwrap();
        let d = dirs(root.path(), 2);
        format_dir(&d[0], CLUSTER, 1, false).unwrap();
        let err = format_dirs(&d, CLUSTER, 1, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Log directory {} is already formatted. Use --ignore-formatted to ignore this directory and format the others.",
                d[0].display()
            )
        );
        // Nothing was written to the other directory.
        assert_eq!(read(&d[1]).unwrap(), None);
        let before = read(&d[0]).unwrap();
        let outcome = format_dirs(&d, CLUSTER, 1, true).unwrap();
        assert!(outcome[0].1.is_none() && outcome[1].1.is_some());
        assert_eq!(read(&d[0]).unwrap(), before);
        let ids: Vec<_> = d
            .iter()
            .map(|dir| read(dir).unwrap().unwrap().directory_id.unwrap())
            .collect();
        assert_ne!(ids[0], ids[1]);
        // --ignore-formatted does not let another cluster or node take a directory over.
        let other = random_uuid();
        assert!(matches!(
            format_dirs(&d, &other, 1, true).unwrap_err(),
            MetaPropertiesError::ClusterIdMismatch { .. }
        ));
        assert!(matches!(
            format_dirs(&d, CLUSTER, 2, true).unwrap_err(),
            MetaPropertiesError::NodeIdMismatch { .. }
        ));
    }

    #[test]
    fn format_refuses_bad_input() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            format_dir(root.path(), "not-a-uuid", 1, false).unwrap_err(),
            MetaPropertiesError::InvalidClusterId { .. }
        ));
        assert!(matches!(
            format_dir(root.path(), CLUSTER, -1, false).unwrap_err(),
            MetaPropertiesError::InvalidNodeId(-1)
        ));
        assert!(matches!(
            format_dirs(&[], CLUSTER, 1, false).unwrap_err(),
            MetaPropertiesError::NoDirectories
        ));
        assert_eq!(read(root.path()).unwrap(), None);
    }

    #[test]
    fn check_or_create_embedded_formats_every_dir_once() {
        let root = tempfile::tempdir().unwrap();
        let d = dirs(root.path(), 3);
        let id = check_or_create(&d, 0, None, true).unwrap();
        assert_eq!(id.len(), 22);
        for dir in &d {
            assert_eq!(read(dir).unwrap().unwrap().cluster_id, id);
        }
        // Restart: same id, nothing rewritten.
        let before: Vec<_> = d.iter().map(|dir| read(dir).unwrap()).collect();
        assert_eq!(check_or_create(&d, 0, None, true).unwrap(), id);
        assert_eq!(check_or_create(&d, 0, Some(&id), false).unwrap(), id);
        let after: Vec<_> = d.iter().map(|dir| read(dir).unwrap()).collect();
        assert_eq!(before, after);
        // A configured id is used when creating.
        let d2 = dirs(&root.path().join("second"), 1);
        assert_eq!(
            check_or_create(&d2, 0, Some(CLUSTER), true).unwrap(),
            CLUSTER
        );
    }

    #[test]
    fn check_or_create_without_create_asks_for_format() {
        let root = tempfile::tempdir().unwrap();
        let d = dirs(root.path(), 2);
        let err = check_or_create(&d, 1, None, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "No meta.properties found in {} (have you run `sluice storage format`?)",
                d[0].display()
            )
        );
        assert_eq!(read(&d[0]).unwrap(), None);
        // One formatted, one new and empty: the empty one needs formatting too.
        format_dir(&d[0], CLUSTER, 1, false).unwrap();
        let err = check_or_create(&d, 1, None, false).unwrap_err();
        assert!(
            matches!(&err, MetaPropertiesError::NotFormatted { dir } if *dir == d[1]),
            "{err}"
        );
        format_dirs(&d, CLUSTER, 1, true).unwrap();
        assert_eq!(check_or_create(&d, 1, None, false).unwrap(), CLUSTER);
        assert_eq!(
            check_or_create(&d, 1, Some(CLUSTER), false).unwrap(),
            CLUSTER
        );
    }

    #[test]
    fn check_or_create_refuses_disagreement_naming_both_values() {
        let root = tempfile::tempdir().unwrap();
        let d = dirs(root.path(), 2);
        let other = random_uuid();
        format_dir(&d[0], CLUSTER, 1, false).unwrap();
        format_dir(&d[1], &other, 1, false).unwrap();
        // Between directories.
        let err = check_or_create(&d, 1, None, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Invalid cluster.id in: {}. Expected {CLUSTER}, but read {other}",
                d[1].join(META_PROPERTIES_FILE).display()
            )
        );
        // Against the configured id.
        let err = check_or_create(&d[..1], 1, Some(&other), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Invalid cluster.id in: {}. Expected {other}, but read {CLUSTER}",
                d[0].join(META_PROPERTIES_FILE).display()
            )
        );
        // Another node's directory.
        let err = check_or_create(&d[..1], 7, None, true).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "Stored node id 1 doesn't match previous node id 7 in {}",
                d[0].join(META_PROPERTIES_FILE).display()
            )),
            "{text}"
        );
    }

    #[test]
    fn copied_directories_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let d = dirs(root.path(), 2);
        format_dir(&d[0], CLUSTER, 1, false).unwrap();
        fs::create_dir_all(&d[1]).unwrap();
        fs::copy(
            d[0].join(META_PROPERTIES_FILE),
            d[1].join(META_PROPERTIES_FILE),
        )
        .unwrap();
        assert!(matches!(
            check_or_create(&d, 1, None, false).unwrap_err(),
            MetaPropertiesError::DuplicateDirectoryId { .. }
        ));
    }

    #[test]
    fn reads_files_older_sluice_wrote_and_refuses_broken_ones() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        // What `log::load_or_create_meta_properties_with` writes (no directory.id).
        fs::write(
            dir.join(META_PROPERTIES_FILE),
            "#\n#Written by Sluice\nversion=1\ncluster.id=abc\nnode.id=0\n",
        )
        .unwrap();
        assert_eq!(
            read(dir).unwrap(),
            Some(MetaProperties {
                cluster_id: "abc".into(),
                node_id: 0,
                directory_id: None
            })
        );
        assert_eq!(
            check_or_create(&[dir.to_path_buf()], 0, None, false).unwrap(),
            "abc"
        );
        for (text, expected) in [
            (
                "version=0\nbroker.id=1\ncluster.id=x\n",
                "unsupported version 0",
            ),
            ("cluster.id=x\nnode.id=1\n", "no version"),
            ("version=1\nnode.id=1\n", "no cluster.id"),
            ("version=1\ncluster.id=x\n", "no node.id"),
            ("version=1\ncluster.id=x\nnode.id=one\n", "bad node.id"),
            (
                "version=1\ncluster.id=x\nnode.id=1\ndirectory.id=zz\n",
                "bad directory.id",
            ),
        ] {
            fs::write(dir.join(META_PROPERTIES_FILE), text).unwrap();
            let err = read(dir).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
