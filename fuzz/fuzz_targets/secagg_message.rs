#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xmcredit_protocol::secagg::SecAggMessage::from_bytes(data);
});
