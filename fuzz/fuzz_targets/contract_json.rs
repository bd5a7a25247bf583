#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = std::str::from_utf8(data).map(xmcredit_contracts::Contract::from_json_str);
});
