//! Secrets a plan names: environment variables of the server called `SLUICE_SECRET_*`, and files under the
//! server's secrets directory — nothing else. A resolved secret goes to the program that needs it (its
//! environment) and nowhere else: every text a plug-in returns (an action's detail, a source's error) is
//! passed through the [`Redactor`] of the secrets it used, so that no decision, audit event, log line,
//! stream event or API answer can echo one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sluice_plan::model::{EnvValue, SecretRef, Spanned};
use sluice_plan::SECRET_ENV_PREFIX;

/// Largest secret file read.
const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// Shorter secrets cannot be told apart from ordinary text in output, so they are refused.
const MIN_SECRET_CHARS: usize = 4;

/// Where secrets are read from.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    dir: Option<PathBuf>,
}

impl Secrets {
    /// Secrets from the environment, and from files under `dir` when given.
    pub fn new(dir: Option<PathBuf>) -> Secrets {
        Secrets { dir }
    }

    /// The value of a secret, or why it cannot be had (never the value).
    ///
    /// ```
    /// use sluice_plan::model::SecretRef;
    /// let secrets = sluice_sources::Secrets::new(None);
    /// let home = SecretRef { secret_env: Some("HOME".into()), secret_file: None };
    /// assert!(secrets.resolve(&home).unwrap_err().contains("SLUICE_SECRET_"));
    /// ```
    pub fn resolve(&self, r: &SecretRef) -> Result<String, String> {
        let value = match (&r.secret_env, &r.secret_file) {
            (Some(name), None) => {
                if !name.starts_with(SECRET_ENV_PREFIX) {
                    return Err(format!(
                        "a plan reads only environment variables named {SECRET_ENV_PREFIX}…, not `{name}`"
                    ));
                }
                std::env::var(name)
                    .map_err(|_| format!("the secret `{name}` is not set in the server's environment"))?
            }
            (None, Some(file)) => self.read_file(file)?,
            _ => return Err("a secret is `{secret_env: SLUICE_SECRET_…}` or `{secret_file: NAME}`".into()),
        };
        let value = value.trim_end_matches(['\r', '\n']).to_string();
        if value.chars().count() < MIN_SECRET_CHARS {
            return Err(format!("a secret of fewer than {MIN_SECRET_CHARS} characters cannot be kept out of output"));
        }
        Ok(value)
    }

    fn read_file(&self, file: &str) -> Result<String, String> {
        let dir = self.dir.as_deref().ok_or_else(|| {
            format!("the secret file `{file}` needs a secrets directory: start the server with --secrets-dir")
        })?;
        let inside = |p: &Path| p.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if file.is_empty() || !inside(Path::new(file)) {
            return Err(format!("`{file}` is not a path inside the secrets directory"));
        }
        let (root, path) = (dir.canonicalize(), dir.join(file).canonicalize());
        let (Ok(root), Ok(path)) = (root, path) else {
            return Err(format!("the secret file `{file}` does not exist in the secrets directory"));
        };
        // A link inside the directory must not lead out of it.
        if !path.starts_with(&root) {
            return Err(format!("the secret file `{file}` leads outside the secrets directory"));
        }
        let size = std::fs::metadata(&path).map_err(|e| format!("the secret file `{file}`: {}", e.kind()))?.len();
        if size > MAX_SECRET_BYTES {
            return Err(format!("the secret file `{file}` is larger than {MAX_SECRET_BYTES} bytes"));
        }
        std::fs::read_to_string(&path).map_err(|e| format!("the secret file `{file}`: {}", e.kind()))
    }

    /// A program's environment from a plan's `env:` (texts with templates filled from `values`, secrets
    /// resolved), and the redactor of the secrets in it.
    pub fn environment(
        &self,
        env: &BTreeMap<String, Spanned<EnvValue>>,
        values: &BTreeMap<String, String>,
    ) -> Result<(Vec<(String, String)>, Redactor), String> {
        let mut vars = Vec::new();
        let mut redactor = Redactor::default();
        // Every secret the server holds, not only those named here: a program may print what it was not
        // given (a configuration file it reads, a mistake in a script).
        for (name, value) in std::env::vars() {
            if name.starts_with(SECRET_ENV_PREFIX) && value.chars().count() >= MIN_SECRET_CHARS {
                redactor.add(value.trim_end_matches(['\r', '\n']));
            }
        }
        for (name, value) in env {
            let value = match &value.value {
                EnvValue::Text(text) => sluice_plan::render(text, values),
                EnvValue::Secret(r) => {
                    let secret = self.resolve(r).map_err(|e| format!("env `{name}`: {e}"))?;
                    redactor.add(&secret);
                    secret
                }
            };
            vars.push((name.clone(), value));
        }
        Ok((vars, redactor))
    }
}

/// Replaces the secrets a plug-in used wherever they appear in text it returns.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    /// Also hides `secret` (and each of its lines, for a secret that spans several).
    pub fn add(&mut self, secret: &str) {
        let lines = secret.lines().map(str::trim).filter(|l| l.chars().count() >= MIN_SECRET_CHARS);
        for v in std::iter::once(secret).chain(lines) {
            if !self.values.iter().any(|known| known == v) {
                self.values.push(v.to_string());
            }
        }
        // Longest first: a secret that contains another is hidden whole.
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// `text` with every secret replaced by `[secret]`.
    ///
    /// ```
    /// let mut r = sluice_sources::Redactor::default();
    /// r.add("hunter2-token");
    /// assert_eq!(r.redact("401 for hunter2-token"), "401 for [secret]");
    /// ```
    pub fn redact(&self, text: &str) -> String {
        self.values.iter().fold(text.to_string(), |text, v| text.replace(v.as_str(), "[secret]"))
    }
}
