//! Loads and compiles a folder `rounds` times (callgrind / timing of the config load alone).
//! `cargo run --profile profiling -p switchyard-config --example load_scale -- DIR [ROUNDS] [cached]`
//! With `cached`, every load and compile after the first goes through the parse cache and the
//! compile memo a running gateway keeps (what a reload costs when nothing, or one file, changed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use switchyard_config::manifests::ParseCache;
use switchyard_config::{compile, compile_with, CompileMemo, CompileOptions, Manifests};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("DIR");
    let rounds: usize = args.next().map_or(1, |r| r.parse().expect("ROUNDS"));
    let mut cache = args.next().map(|_| (ParseCache::default(), CompileMemo::default()));
    for _ in 0..rounds {
        let t = Instant::now();
        let dir = std::path::Path::new(&dir);
        let (m, diags) = match cache.as_mut() {
            Some((cache, _)) => Manifests::load_dir_cached(dir, &|_| None, cache),
            None => Manifests::load_dir(dir, &|_| None),
        };
        let load = t.elapsed();
        assert!(diags.is_empty(), "{:?}", diags.first());
        let t = Instant::now();
        let c = match cache.as_mut() {
            Some((_, memo)) => compile_with(&m, &CompileOptions::default(), memo),
            None => compile(&m, &CompileOptions::default()),
        };
        let compile_ms = t.elapsed();
        if cache.is_some() {
            let t = Instant::now();
            let _ = compile(&m, &CompileOptions::default());
            println!(
                "  (the same compile without the memo: {:.1} ms)",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        println!(
            "load {:.1} ms, compile {:.1} ms, {} keys, {} errors",
            load.as_secs_f64() * 1e3,
            compile_ms.as_secs_f64() * 1e3,
            m.keys.len(),
            c.diagnostics.iter().filter(|d| d.is_error()).count()
        );
    }
}
