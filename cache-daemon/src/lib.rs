//! cache-daemon library (being written).
