#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xmcredit_contracts::AuditRecord::from_canonical_bytes(data);
});
