//! The on-disk layout of the embedded store: four redb tables, and reads over them that both
//! the writer (inside a write transaction) and readers (inside read transactions) use.
//!
//! ```text
//!  LOG       revision ─► (kind, create_revision, key, value)   one entry per revision: the change
//!  VERSIONS  (key, revision) ─► kind                          every version of every key, by key
//!  LIVE      key ─► mod_revision                              the keys that exist now
//!  META      "current" ─► revision, "compacted" ─► revision, "swept" ─► revision
//! ```
//!
//! `LOG` is the only table that holds values; the others index it. A watch replays `LOG` in
//! revision order; a read at a past revision walks `VERSIONS` and reads the chosen entries from
//! `LOG`; a read at the current revision walks `LIVE`. Each trait operation changes exactly one
//! key, so a revision names exactly one `LOG` entry and one `VERSIONS` entry.
//!
//! Compaction to `c` first records `compacted = c` (from then on reads below `c` are refused),
//! then sweeps history in chunks: for each key it keeps every version at or after `c` and the
//! last version before `c` unless that one is a deletion. That last version is what a read at
//! `c` sees and the `prev` value of the key's first event at or after `c`, so watches from `c`
//! on lose nothing. `swept` records the last finished sweep, so a sweep cut short by a crash is
//! resumed on the next open.

use bytes::Bytes;
use redb::{ReadableTable, TableDefinition};

use crate::storage::{Event, EventKind, KeyValue, Revision, StorageError};

/// `(kind, create_revision, key, value)`; a deletion records the deleted version's create
/// revision and an empty value.
pub(super) type LogRecord = (u8, i64, &'static str, &'static [u8]);

pub(super) const LOG: TableDefinition<'static, i64, LogRecord> = TableDefinition::new("log");
pub(super) const VERSIONS: TableDefinition<'static, (&'static str, i64), u8> =
    TableDefinition::new("versions");
pub(super) const LIVE: TableDefinition<'static, &'static str, i64> = TableDefinition::new("live");
pub(super) const META: TableDefinition<'static, &'static str, i64> = TableDefinition::new("meta");

pub(super) const META_CURRENT: &str = "current";
pub(super) const META_COMPACTED: &str = "compacted";
pub(super) const META_SWEPT: &str = "swept";

/// The kind of a `LOG` / `VERSIONS` entry.
pub(super) const PUT: u8 = 1;
pub(super) const TOMBSTONE: u8 = 0;

/// Maps any redb failure to the trait's error: the disk or the database file is unusable.
pub(super) fn db_error(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Unavailable(Box::new(e.into()))
}

pub(super) fn meta(
    table: &impl ReadableTable<&'static str, i64>,
    name: &str,
) -> Result<Revision, StorageError> {
    Ok(table
        .get(name)
        .map_err(db_error)?
        .map(|v| v.value())
        .unwrap_or(0))
}

/// One decoded `LOG` entry.
pub(super) struct Change {
    pub kind: u8,
    pub create_revision: Revision,
    pub key: String,
    pub value: Bytes,
}

impl Change {
    pub fn from_record((kind, create_revision, key, value): (u8, i64, &str, &[u8])) -> Self {
        Change {
            kind,
            create_revision,
            key: key.to_string(),
            value: Bytes::copy_from_slice(value),
        }
    }

    pub fn into_kv(self, mod_revision: Revision) -> KeyValue {
        KeyValue {
            key: self.key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision,
        }
    }
}

pub(super) fn change_at(
    log: &impl ReadableTable<i64, LogRecord>,
    revision: Revision,
) -> Result<Option<Change>, StorageError> {
    Ok(log
        .get(revision)
        .map_err(db_error)?
        .map(|entry| Change::from_record(entry.value())))
}

/// The value `key` was given at `revision`, which an index says exists.
pub(super) fn kv_at(
    log: &impl ReadableTable<i64, LogRecord>,
    key: &str,
    revision: Revision,
) -> Result<KeyValue, StorageError> {
    match change_at(log, revision)? {
        Some(change) if change.kind == PUT && change.key == key => Ok(change.into_kv(revision)),
        _ => Err(StorageError::Corrupt(format!(
            "the index names revision {revision} for key {key:?}, but the log has no such value"
        ))),
    }
}

/// The version of `key` just before `revision`, if it is a live value.
pub(super) fn value_before(
    versions: &impl ReadableTable<(&'static str, i64), u8>,
    log: &impl ReadableTable<i64, LogRecord>,
    key: &str,
    revision: Revision,
) -> Result<Option<KeyValue>, StorageError> {
    let mut range = versions
        .range((key, 0)..(key, revision))
        .map_err(db_error)?;
    match range.next_back().transpose().map_err(db_error)? {
        Some((k, kind)) if kind.value() == PUT => kv_at(log, key, k.value().1).map(Some),
        _ => Ok(None),
    }
}

/// Rebuilds the event recorded at `revision` from the log and the version index.
pub(super) fn event_from_log(
    versions: &impl ReadableTable<(&'static str, i64), u8>,
    log: &impl ReadableTable<i64, LogRecord>,
    revision: Revision,
    change: Change,
) -> Result<Event, StorageError> {
    if change.kind == TOMBSTONE {
        let last = value_before(versions, log, &change.key, revision)?.ok_or_else(|| {
            StorageError::Corrupt(format!(
                "deletion of {:?} at revision {revision} has no preceding value",
                change.key
            ))
        })?;
        return Ok(Event {
            kind: EventKind::Deleted,
            kv: KeyValue {
                mod_revision: revision,
                ..last
            },
            prev: None,
        });
    }
    if change.create_revision == revision {
        return Ok(Event {
            kind: EventKind::Created,
            kv: change.into_kv(revision),
            prev: None,
        });
    }
    let prev = value_before(versions, log, &change.key, revision)?;
    Ok(Event {
        kind: EventKind::Updated,
        kv: change.into_kv(revision),
        prev,
    })
}
