//! stampede-lab's integration tests: the real parts, started and taken down again. Tests that
//! need root or a program skip without it, and fail instead under `STAMPEDE_REQUIRE_REAL=1`.

mod fabric;
