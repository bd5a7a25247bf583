#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xmcredit_protocol::lookup::LookupMessage::from_bytes(data);
});
