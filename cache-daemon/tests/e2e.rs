//! End to end against real parts (written next).
