#![no_main]

// A key definition (first line, JSON) and tab-separated cells read under it; then the
// whole input as a composite key's element text.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (definition, cells) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(kind) = xmcredit_contracts::KeyKind::from_definition(definition) {
        let _ = kind.read(&cells.split('\t').collect::<Vec<_>>());
    }
    let _ = xmcredit_contracts::key::composite_parts(text);
});
