//! The `bench-harness` binary (being written).

fn main() {}
