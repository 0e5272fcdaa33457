//! The `shipper` binary's command line: `--help`, `check-config`.

mod common;

use std::process::Command;

fn shipper(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shipper"))
        .args(args)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

fn write_config(dir: &std::path::Path, extra: &str) -> String {
    let pki = common::make_pki(dir);
    let (cert, key) = pki.client();
    let path = dir.join("shipper.toml");
    let text = format!(
        "[input]\nlog_format = 'main'\n{extra}\n[transport]\nca_cert = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        pki.ca().display(),
        cert.display(),
        key.display()
    );
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn help_names_the_subcommands() {
    let (ok, out, _) = shipper(&["--help"]);
    assert!(ok);
    assert!(
        out.contains("run") && out.contains("check-config") && out.contains("--config"),
        "{out}"
    );
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let (ok, out, err) = shipper(&["--config", &path, "check-config"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "config OK");
}

#[test]
fn check_config_names_an_unknown_key_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "start_from = \"end\"");
    let out = Command::new(env!("CARGO_BIN_EXE_shipper"))
        .args(["--config", &path, "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("start_from"), "{err}");
    assert!(err.contains("shipper.toml"), "{err}");
}

#[test]
fn check_config_reports_unreadable_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    std::fs::remove_file(dir.path().join("client.key")).unwrap();
    let (ok, _, err) = shipper(&["--config", &path, "check-config"]);
    assert!(!ok);
    assert!(err.contains("client.key"), "{err}");
}
