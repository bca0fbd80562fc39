//! JWT decoding and RS256 verification.
//! The input's framing is `sonde::fuzzing::Harness::run`'s (see FUZZING.md).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sonde::fuzzing::Harness;

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("sonde-fuzz-jwt-{}", std::process::id()));
        Harness::new(&dir).expect("scratch folder, runtime and loopback listener")
    })
}

fuzz_target!(|data: &[u8]| {
    harness()
        .run("jwt", data)
        .expect("the harness writes its scratch files");
});
