//! The official Python SDKs against the running gateway. The virtualenv (target/sdk-venv) is made on
//! first use from tests/sdk/requirements.txt; .ci/run prepares it ahead of time.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::json;

/// The venv's python, creating the venv and installing the SDKs when missing.
pub fn sdk_python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("sdk-venv");
    let python = venv.join("bin").join("python");
    let ready = venv.join(".installed");
    let requirements = root.join("tests/sdk/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&ready).ok().as_deref() != Some(wanted.as_str()) {
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .expect("python3 is needed for SDK tests");
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .status()
            .unwrap();
        assert!(status.success(), "pip install of the SDKs failed");
        std::fs::write(&ready, wanted).unwrap();
    }
    python
}

fn run_script(script: &str, gw: &Gateway, key: &str) {
    let python = sdk_python();
    let out = Command::new(python)
        .arg(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/sdk")
                .join(script),
        )
        .env("SWITCHYARD_URL", format!("http://{}", gw.addr))
        .env("SWITCHYARD_KEY", key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{stderr}\ngateway log:\n{}",
        gw.log()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn openai_python_sdk_chat_completions_embeddings_models_and_errors() {
    let up = FakeUpstream::start();
    let mut cfg = config_for(&up);
    cfg["clients"] = json!([{"name": "sdk", "key": "sdk-test-key"}]);
    let gw = Gateway::start(&cfg);
    run_script("openai_sdk.py", &gw, "sdk-test-key");
    assert!(!up
        .requests()
        .iter()
        .any(|r| r.headers.values().any(|v| v.contains("sdk-test-key"))));
}
