//! Where an `s3://` repository is and how to reach it, resolved the way
//! the AWS tools resolve it, so that a user's existing setup just works:
//! the environment first (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
//! `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`), then the profile named by
//! `AWS_PROFILE` (else `default`) in `~/.aws/credentials` and
//! `~/.aws/config` (or `AWS_SHARED_CREDENTIALS_FILE`/`AWS_CONFIG_FILE`).
//!
//! Credentials must be found here: the instance-metadata lookup the SDKs
//! fall back to would send requests to a link-local address and hang for
//! seconds on any machine that is not a cloud instance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A bucket and a prefix in it, from `s3://BUCKET/PREFIX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, without leading or trailing slash; may be empty.
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://BUCKET[/PREFIX]`.
    pub fn parse(url: &str) -> Result<S3Url> {
        let bad = |why: &str| {
            Error::Config(format!(
                "{url}: {why}; write s3://BUCKET or s3://BUCKET/PREFIX"
            ))
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// location"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // Bucket names: 3 to 63 of lowercase letters, digits, dots and
        // hyphens (the rule AWS, Garage and MinIO share).
        let ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !ok {
            return Err(bad(
                "the bucket name must be 3 to 63 lowercase letters, digits, dots or hyphens",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
            && !prefix.is_empty()
        {
            return Err(bad("the prefix has an empty, `.` or `..` part"));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// Everything needed to talk to the store.
#[derive(Clone)]
pub struct S3Config {
    /// The bucket and prefix.
    pub url: S3Url,
    /// Region (Garage's default is `garage`; AWS needs the bucket's).
    pub region: String,
    /// Endpoint for stores other than AWS (`http://127.0.0.1:3900`).
    pub endpoint: Option<String>,
    /// Access key ID.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Whether the bucket goes in the host name (AWS's newer style)
    /// rather than the path (what Garage and MinIO expect).
    pub virtual_hosted: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("url", &self.url)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Where the process looks: its environment and home, passed in so tests
/// can give their own.
pub trait Env {
    /// An environment variable, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
    /// The user's home directory.
    fn home(&self) -> Option<PathBuf>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn home(&self) -> Option<PathBuf> {
        std::env::var_os("HOME").map(PathBuf::from)
    }
}

impl S3Config {
    /// Resolves the configuration of `url` from `env`.
    pub fn resolve(url: &str, env: &dyn Env) -> Result<S3Config> {
        let url = S3Url::parse(url)?;
        let profile = env.var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let aws_dir = env.home().map(|h| h.join(".aws"));
        let creds_file = env
            .var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| aws_dir.as_ref().map(|d| d.join("credentials")));
        let config_file = env
            .var("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| aws_dir.as_ref().map(|d| d.join("config")));
        // In `credentials` a profile's section is `[NAME]`; in `config` it
        // is `[profile NAME]`, except `[default]`.
        let creds = match &creds_file {
            Some(p) => read_section(p, &profile)?,
            None => HashMap::new(),
        };
        let conf = match &config_file {
            Some(p) => {
                let s = read_section(p, &format!("profile {profile}"))?;
                if s.is_empty() && profile == "default" {
                    read_section(p, "default")?
                } else {
                    s
                }
            }
            None => HashMap::new(),
        };
        let from_files = |k: &str| creds.get(k).or_else(|| conf.get(k)).cloned();
        let (access_key_id, secret_access_key, session_token) = match (
            env.var("AWS_ACCESS_KEY_ID"),
            env.var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => (id, secret, env.var("AWS_SESSION_TOKEN")),
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Config(
                    "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither (then the profile's are used)".into(),
                ));
            }
            (None, None) => match (
                from_files("aws_access_key_id"),
                from_files("aws_secret_access_key"),
            ) {
                (Some(id), Some(secret)) => (id, secret, from_files("aws_session_token")),
                _ => {
                    return Err(Error::Config(format!(
                        "no S3 credentials for {}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put them in profile `{profile}` of {}",
                        display_url(&url),
                        creds_file
                            .as_deref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "~/.aws/credentials".into())
                    )));
                }
            },
        };
        let region = env
            .var("AWS_REGION")
            .or_else(|| env.var("AWS_DEFAULT_REGION"))
            .or_else(|| conf.get("region").cloned())
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = env
            .var("AWS_ENDPOINT_URL_S3")
            .or_else(|| env.var("AWS_ENDPOINT_URL"))
            .or_else(|| conf.get("endpoint_url").cloned());
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(Error::Config(format!(
                "S3 endpoint {e}: write it as a URL, http://HOST:PORT or https://HOST"
            )));
        }
        let virtual_hosted = env
            .var("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
            .map(|v| v == "true" || v == "1")
            .unwrap_or(endpoint.is_none());
        Ok(S3Config {
            url,
            region,
            endpoint,
            access_key_id,
            secret_access_key,
            session_token,
            virtual_hosted,
        })
    }
}

/// `s3://bucket/prefix`, as users wrote it.
pub(crate) fn display_url(u: &S3Url) -> String {
    if u.prefix.is_empty() {
        format!("s3://{}", u.bucket)
    } else {
        format!("s3://{}/{}", u.bucket, u.prefix)
    }
}

/// The `key = value` pairs of section `[name]` of an INI file as the AWS
/// tools write it; a missing file is an empty section.
fn read_section(path: &Path, name: &str) -> Result<HashMap<String, String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut out = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == name;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(HashMap<&'static str, String>, PathBuf);
    impl Env for Fake {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn home(&self) -> Option<PathBuf> {
            Some(self.1.clone())
        }
    }

    #[test]
    fn urls() {
        let u = S3Url::parse("s3://backups/laptop/home/").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.prefix.as_str()),
            ("backups", "laptop/home")
        );
        assert_eq!(S3Url::parse("s3://backups").unwrap().prefix, "");
        for bad in [
            "s3://",
            "s3://B",
            "s3://ab",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "https://x",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_then_profiles() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\n[offsite]\naws_access_key_id=OFF\naws_secret_access_key=offsecret\n",
        )
        .unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[default]\nregion = eu-west-1\n[profile offsite]\nregion = garage\nendpoint_url = http://127.0.0.1:3900\n",
        )
        .unwrap();
        let mut vars = HashMap::new();
        let c = S3Config::resolve("s3://bkt/p", &Fake(vars.clone(), home.path().into())).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.region.as_str()),
            ("DEF", "eu-west-1")
        );
        assert!(c.endpoint.is_none() && c.virtual_hosted);
        vars.insert("AWS_PROFILE", "offsite".to_string());
        let c = S3Config::resolve("s3://bkt/p", &Fake(vars.clone(), home.path().into())).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.region.as_str()),
            ("OFF", "garage")
        );
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(!c.virtual_hosted);
        vars.insert("AWS_ACCESS_KEY_ID", "ENV".to_string());
        assert!(S3Config::resolve("s3://bkt", &Fake(vars.clone(), home.path().into())).is_err());
        vars.insert("AWS_SECRET_ACCESS_KEY", "envsecret".to_string());
        vars.insert("AWS_REGION", "r1".to_string());
        let c = S3Config::resolve("s3://bkt", &Fake(vars.clone(), home.path().into())).unwrap();
        assert_eq!((c.access_key_id.as_str(), c.region.as_str()), ("ENV", "r1"));
        let none = tempfile::tempdir().unwrap();
        let e = S3Config::resolve("s3://bkt", &Fake(HashMap::new(), none.path().into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
    }
}
