//! The manifests loader (YAML documents from bytes, `${VAR}` references resolved) and `compile()`
//! on what it loaded. No panic; the compile is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_config::{compile, CompileOptions, Manifests};

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let env = |name: &str| (name.len() % 2 == 0).then(|| format!("value-of-{name}"));
    let mut m = Manifests::default();
    let _ = m.add_yaml("fuzz.yaml", text, &env);
    let first = compile(&m, &CompileOptions::default());
    let second = compile(&m, &CompileOptions::default());
    assert_eq!(format!("{:?}", first.diagnostics), format!("{:?}", second.diagnostics));
});
