#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xmcredit_protocol::overthreshold::OverthresholdMessage::from_bytes(data);
});
