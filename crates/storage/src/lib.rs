//! The partition log (see issue: storage engine).
