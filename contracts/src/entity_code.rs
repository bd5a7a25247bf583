//! Unified social credit codes (GB 32100-2015): being written.
