//! Resolving a model spec against a Hugging Face cache laid out in a temporary directory the
//! way `huggingface_hub` and `hf-hub` write it. No test touches the network: the one online
//! path points HF_ENDPOINT at a closed local port.

use std::path::{Path, PathBuf};

use gpt2::weights::hub::{resolve_with_env, ResolveOptions};
use gpt2::weights::Weights;
use gpt2::Error;

const HASH: &str = "607a30d783dfa663caf39e06633721c8d4cfcd7e";
const OTHER_HASH: &str = "11c5a3d5811f50298f278a704980280950aedb10";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/weights")
}

/// `models--{folder}/snapshots/{hash}/` with config.json + model.safetensors, and
/// `refs/{branch}` pointing at it when a branch is given.
fn cache_snapshot(cache: &Path, folder: &str, branch: Option<&str>, hash: &str) -> PathBuf {
    let repo = cache.join(format!("models--{folder}"));
    let snap = repo.join("snapshots").join(hash);
    std::fs::create_dir_all(&snap).unwrap();
    let src = fixtures().join("lm_safetensors");
    std::fs::copy(src.join("config.json"), snap.join("config.json")).unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        snap.join("model.safetensors"),
    )
    .unwrap();
    if let Some(branch) = branch {
        let r = repo.join("refs").join(branch);
        std::fs::create_dir_all(r.parent().unwrap()).unwrap();
        std::fs::write(r, format!("{hash}\n")).unwrap();
    }
    snap
}

fn offline(cache: &Path) -> ResolveOptions {
    ResolveOptions {
        offline: true,
        cache_dir: Some(cache.to_path_buf()),
        progress: false,
        ..ResolveOptions::default()
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn local_directory_is_used_as_is() {
    let dir = fixtures().join("safetensors");
    let spec = dir.to_str().unwrap();
    let got = resolve_with_env(spec, &ResolveOptions::default(), &no_env).unwrap();
    assert_eq!(got, dir);
    let file = dir.join("model.safetensors");
    let err = resolve_with_env(file.to_str().unwrap(), &ResolveOptions::default(), &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a file"), "{err}");
    let err = resolve_with_env("./no/such/dir", &ResolveOptions::default(), &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("./no/such/dir") && err.contains("no such directory"),
        "{err}"
    );
}

#[test]
fn main_ref_resolves_to_its_snapshot_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = cache_snapshot(tmp.path(), "openai-community--gpt2", Some("main"), HASH);
    for spec in ["openai-community/gpt2", "gpt2", "gpt2@main"] {
        let got = resolve_with_env(spec, &offline(tmp.path()), &no_env).unwrap();
        assert_eq!(got, snap, "{spec}");
    }
    let w = Weights::from_dir(&snap).unwrap();
    assert!(w.contains("wte.weight"));
}

#[test]
fn legacy_cache_names_are_found_under_the_new_id() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = cache_snapshot(tmp.path(), "gpt2", Some("main"), HASH);
    let got = resolve_with_env("openai-community/gpt2", &offline(tmp.path()), &no_env).unwrap();
    assert_eq!(got, snap);
    let snap = cache_snapshot(tmp.path(), "distilgpt2", Some("main"), HASH);
    let got = resolve_with_env("distilbert/distilgpt2", &offline(tmp.path()), &no_env).unwrap();
    assert_eq!(got, snap);
}

#[test]
fn revisions_by_branch_and_by_commit_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let main = cache_snapshot(tmp.path(), "me--tiny", Some("main"), HASH);
    let v2 = cache_snapshot(tmp.path(), "me--tiny", Some("v2"), OTHER_HASH);
    let opts = offline(tmp.path());
    assert_eq!(resolve_with_env("me/tiny", &opts, &no_env).unwrap(), main);
    assert_eq!(resolve_with_env("me/tiny@v2", &opts, &no_env).unwrap(), v2);
    // A commit hash needs no ref file.
    let by_hash = format!("me/tiny@{OTHER_HASH}");
    assert_eq!(resolve_with_env(&by_hash, &opts, &no_env).unwrap(), v2);
    // ResolveOptions::revision overrides the spec's.
    let pinned = ResolveOptions {
        revision: Some("v2".into()),
        ..opts.clone()
    };
    assert_eq!(
        resolve_with_env("me/tiny@main", &pinned, &no_env).unwrap(),
        v2
    );
    // A branch whose ref exists but whose snapshot was deleted is not in the cache.
    std::fs::remove_dir_all(&v2).unwrap();
    let err = resolve_with_env("me/tiny@v2", &opts, &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not in the Hugging Face cache"), "{err}");
}

#[test]
fn incomplete_snapshots_are_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = cache_snapshot(tmp.path(), "me--sharded", Some("main"), HASH);
    std::fs::remove_file(snap.join("model.safetensors")).unwrap();
    let index = r#"{"weight_map": {"wte.weight": "model-00001-of-00002.safetensors",
                                   "wpe.weight": "model-00002-of-00002.safetensors"}}"#;
    std::fs::write(snap.join("model.safetensors.index.json"), index).unwrap();
    std::fs::write(snap.join("model-00001-of-00002.safetensors"), b"").unwrap();
    let opts = offline(tmp.path());
    assert!(resolve_with_env("me/sharded", &opts, &no_env).is_err());
    std::fs::write(snap.join("model-00002-of-00002.safetensors"), b"").unwrap();
    assert_eq!(
        resolve_with_env("me/sharded", &opts, &no_env).unwrap(),
        snap
    );
    // No config.json: not usable either.
    std::fs::remove_file(snap.join("config.json")).unwrap();
    assert!(resolve_with_env("me/sharded", &opts, &no_env).is_err());
}

#[test]
fn offline_errors_say_where_and_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let env = |k: &str| match k {
        "HF_HUB_OFFLINE" => Some("1".to_string()),
        "HF_HUB_CACHE" => Some(cache.to_str().unwrap().to_string()),
        _ => None,
    };
    let opts = ResolveOptions {
        progress: false,
        ..ResolveOptions::default()
    };
    let err = resolve_with_env("gpt2", &opts, &env).unwrap_err();
    assert!(matches!(err, Error::Hub(_)));
    let msg = err.to_string();
    for part in [
        "gpt2",
        "not in the Hugging Face cache",
        "HF_HUB_OFFLINE=1",
        "local directory",
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
    assert!(msg.contains(cache.to_str().unwrap()), "{msg}");

    let err = resolve_with_env("gpt2", &offline(&cache), &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("offline") && err.contains(cache.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn invalid_ids_are_rejected_before_any_lookup() {
    let tmp = tempfile::tempdir().unwrap();
    for spec in ["a/b/c", "bad id", "x@", "a/../b"] {
        let err = resolve_with_env(spec, &offline(tmp.path()), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains(spec), "{err}");
    }
}

#[cfg(feature = "hub")]
#[test]
fn unreachable_hub_is_a_clear_error() {
    // A closed port on this machine: the download path runs and fails fast, no network.
    let tmp = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = |k: &str| (k == "HF_ENDPOINT").then(|| endpoint.clone());
    let opts = ResolveOptions {
        cache_dir: Some(tmp.path().to_path_buf()),
        progress: false,
        ..ResolveOptions::default()
    };
    let msg = resolve_with_env("me/tiny", &opts, &env)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("config.json") && msg.contains("me/tiny"),
        "{msg}"
    );
    assert!(
        msg.contains("cannot reach the hub") && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );
}
