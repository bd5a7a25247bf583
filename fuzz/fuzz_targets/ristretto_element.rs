#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xmcredit_crypto::group::decode_element(data);
});
