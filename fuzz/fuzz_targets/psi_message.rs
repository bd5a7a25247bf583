#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xmcredit_protocol::psi::PsiMessage::from_bytes(data);
});
