//! The Cap'n Proto code in `src/generated/` is checked in so that building
//! Sluice needs no `capnp` compiler. This test regenerates it with the
//! `capnp` tool (installed by `deploy/dev`) and fails if the checked-in copy
//! has drifted from `capnp/*.capnp`.
//!
//! To refresh the checked-in code after editing a schema:
//! `SLUICE_REGENERATE=1 cargo test -p schemas --test generated_code`.

use std::path::{Path, PathBuf};

const SCHEMAS: &[&str] = &["request"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate_into(out: &Path) {
    let dir = crate_dir();
    let mut cmd = capnpc::CompilerCommand::new();
    cmd.src_prefix(dir.join("capnp")).output_path(out);
    for name in SCHEMAS {
        cmd.file(dir.join("capnp").join(format!("{name}.capnp")));
    }
    cmd.run().expect(
        "running the `capnp` compiler (is capnproto installed? `./deploy/dev up` installs it)",
    );
}

#[test]
fn checked_in_code_matches_the_schemas() {
    let checked_in = crate_dir().join("src/generated");
    if std::env::var_os("SLUICE_REGENERATE").is_some() {
        generate_into(&checked_in);
        return;
    }
    let fresh = std::env::temp_dir().join(format!("sluice-capnp-{}", std::process::id()));
    std::fs::create_dir_all(&fresh).unwrap();
    generate_into(&fresh);
    for name in SCHEMAS {
        let file = format!("{name}_capnp.rs");
        let want = std::fs::read_to_string(fresh.join(&file)).unwrap();
        let have = std::fs::read_to_string(checked_in.join(&file)).unwrap_or_default();
        assert!(
            want == have,
            "schemas/src/generated/{file} is stale; regenerate with \
             SLUICE_REGENERATE=1 cargo test -p schemas --test generated_code"
        );
    }
    std::fs::remove_dir_all(&fresh).ok();
}
