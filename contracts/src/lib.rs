//! placeholder: being written
pub mod entity_code;
