//! Helpers for interop tests.
