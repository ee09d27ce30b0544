//! stampede-lab's integration tests: the real parts, started and taken down again. Tests that
//! need root or a program skip without it, and fail instead under `STAMPEDE_REQUIRE_REAL=1`.

// A test body reads top to bottom as one scenario: the size limits (clippy.toml) are for non-test code.
#![allow(clippy::too_many_lines, clippy::too_many_arguments)]

mod fabric;
