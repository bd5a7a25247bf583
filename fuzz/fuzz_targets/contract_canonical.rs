#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xmcredit_contracts::Contract::from_canonical_bytes(data);
});
