//! Links the functions a gateway runs together at the start of `.text`, in the order of
//! `hot-symbols.txt` (written by `bench/hot-symbols.sh`): LLD's `--symbol-ordering-file`.
//!
//! Only on x86_64 Linux with optimisations on (`release`, `dist`, `profiling`), where rustc links
//! with its own LLD; elsewhere, or with `SWITCHYARD_SYMBOL_ORDER=0` (a linker other than LLD, say),
//! the binary is linked in the default order and works the same. Symbols the file names that the
//! binary lacks are skipped without a warning: the file names the `dist` build's symbols (their
//! hashes differ in other profiles and change with dependencies and features), and `bench/run.sh`
//! reports how many of them the binary it measures has.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=hot-symbols.txt");
    println!("cargo:rerun-if-env-changed=SWITCHYARD_SYMBOL_ORDER");
    let target = std::env::var("TARGET").unwrap_or_default();
    let optimised = std::env::var("OPT_LEVEL").is_ok_and(|l| l != "0");
    let wanted = std::env::var("SWITCHYARD_SYMBOL_ORDER").as_deref() != Ok("0");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("hot-symbols.txt");
    if target == "x86_64-unknown-linux-gnu" && optimised && wanted && file.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=switchyard=-Wl,--symbol-ordering-file={}",
            file.display()
        );
        println!("cargo:rustc-link-arg-bin=switchyard=-Wl,--no-warn-symbol-ordering");
    }
}
