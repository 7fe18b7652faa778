//! Zero-copy view of magic-v2 record batch headers (filled in by the storage work).
