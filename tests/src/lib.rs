//! Cross-crate integration tests live in `tests/`: each starts real node processes on
//! 127.0.0.1 with temporary data directories, talking gRPC over mutual TLS.
