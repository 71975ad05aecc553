//! Where a model comes from: a local directory, or a Hugging Face hub id found in the local
//! hub cache, else downloaded into it (through the `hf-hub` crate, with a progress bar).
//!
//! The cache layout is the one `huggingface_hub` (Python) and `hf-hub` share, so a model
//! downloaded by either is found by the other:
//! `<cache>/models--{org}--{name}/refs/{revision}` holds a commit hash and
//! `<cache>/models--{org}--{name}/snapshots/{hash}/` holds the files.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How [`resolve_model_dir`] may find a model. Unset fields fall back to the environment
/// variables `huggingface_hub` reads.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Never touch the network (also set by `HF_HUB_OFFLINE=1` or `TRANSFORMERS_OFFLINE=1`).
    pub offline: bool,
    /// The hub cache; default `HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Branch, tag or commit; overrides an `@revision` in the spec. Default `main`.
    pub revision: Option<String>,
    /// Access token for private or gated models; default `HF_TOKEN` or the saved token.
    pub token: Option<String>,
    /// Show a progress bar while downloading.
    pub progress: bool,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        ResolveOptions {
            offline: false,
            cache_dir: None,
            revision: None,
            token: None,
            progress: true,
        }
    }
}

/// The names the hub moved GPT-2 checkpoints to; a cache may hold either spelling.
const RENAMED: [(&str, &str); 5] = [
    ("gpt2", "openai-community/gpt2"),
    ("gpt2-medium", "openai-community/gpt2-medium"),
    ("gpt2-large", "openai-community/gpt2-large"),
    ("gpt2-xl", "openai-community/gpt2-xl"),
    ("distilgpt2", "distilbert/distilgpt2"),
];

/// Files fetched besides the weights when present; only config.json is required. A saved
/// quantized checkpoint copies the optional ones too.
const CONFIG: &str = "config.json";
pub(crate) const OPTIONAL_FILES: [&str; 6] = [
    "generation_config.json",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// A hub id, `org/name` or a legacy bare `name`, with the revision to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    pub repo: String,
    pub revision: String,
}

impl HubId {
    /// Parse `org/name[@revision]`. Ids are what the hub accepts: at most one `/`, letters,
    /// digits, `-`, `_`, `.`.
    pub fn parse(spec: &str) -> Option<HubId> {
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            Some(_) => return None,
            None => (spec, "main"),
        };
        let ok_part = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && !s.contains("..")
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.is_empty() || parts.len() > 2 || !parts.iter().all(|p| ok_part(p)) {
            return None;
        }
        if revision
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return None;
        }
        Some(HubId {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// The repo names to look for in the cache, the current name first.
    fn aliases(&self) -> Vec<String> {
        let mut names = vec![self.repo.clone()];
        for (old, new) in RENAMED {
            if self.repo == old {
                names.insert(0, new.to_string());
            } else if self.repo == new {
                names.push(old.to_string());
            }
        }
        names
    }
}

/// The directory holding a model's files: `spec` itself if it is a directory, else a hub id
/// (`gpt2`, `openai-community/gpt2-medium`, `user/model@revision`) resolved from the hub
/// cache and downloaded there when absent (unless offline).
pub fn resolve_model_dir(spec: &str, opts: &ResolveOptions) -> Result<PathBuf> {
    resolve_with_env(spec, opts, &|k| std::env::var(k).ok())
}

/// [`resolve_model_dir`] with the environment passed in, so tests need not mutate the
/// process's.
pub fn resolve_with_env(
    spec: &str,
    opts: &ResolveOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(Error::Hub(format!(
            "{spec} is a file; pass the directory that holds config.json and the weights"
        )));
    }
    let looks_like_path = spec.starts_with(['.', '/', '~', '\\'])
        || spec.contains('\\')
        || spec
            .split('@')
            .next()
            .is_some_and(|r| r.matches('/').count() > 1);
    let parsed = HubId::parse(spec).filter(|_| !looks_like_path);
    let Some(mut id) = parsed else {
        return Err(Error::Hub(format!(
            "{spec}: no such directory, and not a hub model id (like `gpt2` or `org/name@revision`)"
        )));
    };
    if let Some(rev) = &opts.revision {
        id.revision = rev.clone();
    }
    let cache = opts.cache_dir.clone().unwrap_or_else(|| cache_dir(env));
    if let Some(dir) = find_in_cache(&cache, &id) {
        return Ok(dir);
    }
    let offline_env = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]
        .into_iter()
        .find(|k| env(k).is_some_and(|v| is_true(&v)));
    if opts.offline || offline_env.is_some() {
        let why = match offline_env {
            Some(var) => format!("{var}=1 is set"),
            None => "offline mode is on".to_string(),
        };
        return Err(Error::Hub(format!(
            "model {} (revision {}) is not in the Hugging Face cache at {} and {why}; \
             run once online to download it, or pass a local directory",
            id.repo,
            id.revision,
            cache.display()
        )));
    }
    let token = opts.token.clone().or_else(|| token(env));
    let endpoint = env("HF_ENDPOINT");
    download::fetch(&id, &cache, token, endpoint, opts.progress)
}

/// `huggingface_hub`'s order: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub,
/// XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub.
pub fn cache_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = env("HF_HUB_CACHE").or_else(|| env("HUGGINGFACE_HUB_CACHE")) {
        return PathBuf::from(dir);
    }
    hf_home(env).join("hub")
}

fn hf_home(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(home) = env("HF_HOME") {
        return PathBuf::from(home);
    }
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("huggingface");
    }
    let home = env("HOME")
        .or_else(|| env("USERPROFILE"))
        .unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("huggingface")
}

fn token(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(t) = env("HF_TOKEN").or_else(|| env("HUGGING_FACE_HUB_TOKEN")) {
        return Some(t.trim().to_string()).filter(|t| !t.is_empty());
    }
    let path = env("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| hf_home(env).join("token"));
    let t = std::fs::read_to_string(path).ok()?;
    Some(t.trim().to_string()).filter(|t| !t.is_empty())
}

fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "on" | "yes" | "true"
    )
}

fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// A cached snapshot of `id` (under any of its names) that has everything needed to load.
pub fn find_in_cache(cache: &Path, id: &HubId) -> Option<PathBuf> {
    id.aliases().into_iter().find_map(|name| {
        let repo = cache.join(repo_folder(&name));
        let commit = std::fs::read_to_string(repo.join("refs").join(&id.revision))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && !s.contains(['/', '\\']))
            .or_else(|| is_commit_hash(&id.revision).then(|| id.revision.clone()))?;
        let snapshot = repo.join("snapshots").join(commit);
        is_complete(&snapshot).then_some(snapshot)
    })
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// config.json and one whole set of weights: a single file, or an index and all its shards.
pub fn is_complete(dir: &Path) -> bool {
    dir.join(CONFIG).is_file() && weights_present(dir)
}

fn weights_present(dir: &Path) -> bool {
    let single = ["model.safetensors", "pytorch_model.bin"];
    let indexed = [
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ];
    single.iter().any(|f| dir.join(f).is_file())
        || indexed.iter().any(|f| {
            shard_names(&dir.join(f))
                .is_some_and(|shards| shards.iter().all(|s| dir.join(s).is_file()))
        })
}

/// The shard file names an index lists, or None if it is missing or unreadable.
fn shard_names(index: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(index).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut names: Vec<String> = json
        .get("weight_map")?
        .as_object()?
        .values()
        .filter_map(|v| v.as_str().map(String::from))
        .filter(|s| Path::new(s).components().count() == 1)
        .collect();
    names.sort();
    names.dedup();
    Some(names).filter(|n| !n.is_empty())
}

#[cfg(feature = "hub")]
mod download {
    use std::path::{Path, PathBuf};

    use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
    use hf_hub::{Repo, RepoType};

    use super::{shard_names, HubId, CONFIG, OPTIONAL_FILES};
    use crate::error::{Error, Result};

    /// Download config, tokenizer files and one set of weights (preferring safetensors) into
    /// the cache, and return the snapshot directory they land in.
    pub(super) fn fetch(
        id: &HubId,
        cache: &Path,
        token: Option<String>,
        endpoint: Option<String>,
        progress: bool,
    ) -> Result<PathBuf> {
        let mut builder = ApiBuilder::new()
            .with_cache_dir(cache.to_path_buf())
            .with_token(token)
            .with_progress(progress)
            .with_retries(2);
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let api = builder
            .build()
            .map_err(|e| Error::Hub(format!("cannot start the hub client: {e}")))?;
        // Download under the current name (the hub redirects old ones), as Python's
        // huggingface_hub does for `openai-community/gpt2` today.
        let current = id.aliases().remove(0);
        let repo = api.repo(Repo::with_revision(
            current,
            RepoType::Model,
            id.revision.clone(),
        ));
        let what = |file: &str, e: ApiError| {
            Error::Hub(format!(
                "downloading {file} of {} (revision {}): {}",
                id.repo,
                id.revision,
                explain(&e)
            ))
        };
        let config = repo.get(CONFIG).map_err(|e| what(CONFIG, e))?;
        let dir = config
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| Error::Hub(format!("{}: no parent directory", config.display())))?;
        for file in OPTIONAL_FILES {
            match repo.get(file) {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(what(file, e)),
            }
        }
        fetch_weights(&repo, id, &what)?;
        Ok(dir)
    }

    fn fetch_weights(
        repo: &ApiRepo,
        id: &HubId,
        what: &dyn Fn(&str, ApiError) -> Error,
    ) -> Result<()> {
        for (single, index) in [
            ("model.safetensors", "model.safetensors.index.json"),
            ("pytorch_model.bin", "pytorch_model.bin.index.json"),
        ] {
            match repo.get(single) {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(what(single, e)),
            }
            match repo.get(index) {
                Ok(path) => {
                    let shards = shard_names(&path).ok_or_else(|| {
                        Error::Hub(format!("{}: no shards in weight_map", path.display()))
                    })?;
                    for shard in shards {
                        repo.get(&shard).map_err(|e| what(&shard, e))?;
                    }
                    return Ok(());
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(what(index, e)),
            }
        }
        Err(Error::Hub(format!(
            "{} (revision {}) has no model.safetensors, pytorch_model.bin or sharded index",
            id.repo, id.revision
        )))
    }

    fn status(e: &ApiError) -> Option<u16> {
        match e {
            ApiError::RequestError(r) => match r.as_ref() {
                ureq::Error::Status(code, _) => Some(*code),
                ureq::Error::Transport(_) => None,
            },
            ApiError::TooManyRetries(inner) => status(inner),
            _ => None,
        }
    }

    fn is_not_found(e: &ApiError) -> bool {
        status(e) == Some(404)
    }

    fn explain(e: &ApiError) -> String {
        match status(e) {
            Some(401) | Some(403) => format!(
                "{e}: the model is private or gated; set HF_TOKEN or log in with `huggingface-cli login`"
            ),
            Some(404) => format!("{e}: no such model, revision or file on the hub"),
            Some(_) => e.to_string(),
            None => match e {
                ApiError::RequestError(_) => format!(
                    "{e}: cannot reach the hub; check the network, or set HF_HUB_OFFLINE=1 and \
                     use a cached model or a local directory"
                ),
                _ => e.to_string(),
            },
        }
    }
}

#[cfg(not(feature = "hub"))]
mod download {
    use std::path::{Path, PathBuf};

    use super::HubId;
    use crate::error::{Error, Result};

    pub(super) fn fetch(
        id: &HubId,
        cache: &Path,
        _token: Option<String>,
        _endpoint: Option<String>,
        _progress: bool,
    ) -> Result<PathBuf> {
        Err(Error::Hub(format!(
            "model {} is not in the Hugging Face cache at {} and this build has no hub \
             download support (the `hub` feature); pass a local directory",
            id.repo,
            cache.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids() {
        let id = HubId::parse("openai-community/gpt2@v1.0").unwrap();
        assert_eq!(id.repo, "openai-community/gpt2");
        assert_eq!(id.revision, "v1.0");
        assert_eq!(HubId::parse("gpt2").unwrap().revision, "main");
        assert_eq!(HubId::parse("a/b@refs/pr/1").unwrap().revision, "refs/pr/1");
        for bad in ["a/b/c", "", "a@", "../x", "a b", "a/b@../../x", "/abs"] {
            assert!(HubId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn legacy_aliases_both_ways() {
        let old = HubId::parse("gpt2").unwrap();
        assert_eq!(old.aliases(), vec!["openai-community/gpt2", "gpt2"]);
        let new = HubId::parse("distilbert/distilgpt2").unwrap();
        assert_eq!(new.aliases(), vec!["distilbert/distilgpt2", "distilgpt2"]);
        let other = HubId::parse("me/mine").unwrap();
        assert_eq!(other.aliases(), vec!["me/mine"]);
    }

    #[test]
    fn cache_dir_follows_huggingface_hub() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            cache_dir(&env(&[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h")])),
            PathBuf::from("/c")
        );
        assert_eq!(
            cache_dir(&env(&[("HF_HOME", "/h")])),
            PathBuf::from("/h/hub")
        );
        assert_eq!(
            cache_dir(&env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/home/u")])),
            PathBuf::from("/x/huggingface/hub")
        );
        assert_eq!(
            cache_dir(&env(&[("HOME", "/home/u")])),
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
    }

    #[test]
    fn truthy_values() {
        for v in ["1", "ON", "yes", "True"] {
            assert!(is_true(v));
        }
        for v in ["0", "", "off", "no"] {
            assert!(!is_true(v));
        }
    }
}
