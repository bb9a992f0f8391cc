//! Opening the store a URL names (a local path, `file:///abs`, `s3://bucket/prefix`) with the
//! global S3 options. A local directory that does not exist is reported, not created (the
//! library creates it, which suits a shipper, not an inspection tool), and a URL carrying
//! credentials is refused without echoing them.

use std::path::Path;

use clap::Args;
use pagelog_snapshot::{StoreOptions, StoreRef, StoreUrl, open_store};

use super::exit::{CliError, Exit};

const HEADING: &str = "S3 options (any subcommand)";

/// Options for S3-compatible stores (ignored by local directories). Credentials come from
/// the standard AWS environment and config files, never from the command line.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// S3 endpoint URL (MinIO, R2, ...). Default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS.
    #[arg(long, global = true, value_name = "URL", help_heading = HEADING)]
    pub endpoint: Option<String>,
    /// S3 region. Default: AWS_REGION or the profile, else us-east-1.
    #[arg(long, global = true, value_name = "REGION", help_heading = HEADING)]
    pub region: Option<String>,
    /// Path-style S3 addressing (endpoint/bucket/key); `--path-style=false` turns it off.
    /// Default: on when an endpoint is set.
    #[arg(
        long,
        global = true,
        value_name = "BOOL",
        help_heading = HEADING,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub path_style: Option<bool>,
    /// Seconds one S3 request attempt may take (connecting, sending, the answer's headers)
    /// before it is given up and retried; a body being downloaded gets at least 60 s.
    /// Default 10.
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        help_heading = HEADING,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub timeout: Option<u64>,
    /// Attempts per S3 request, counting the first (retries back off exponentially). A server
    /// that never answers fails a command after about (timeout + backoff) × attempts. Default 3.
    #[arg(
        long,
        global = true,
        value_name = "N",
        help_heading = HEADING,
        value_parser = clap::value_parser!(u32).range(1..=100)
    )]
    pub attempts: Option<u32>,
}

/// Default of `--timeout`: an inspection tool should not sit for minutes on a silent server
/// (the library's default is 60 s per attempt, for a shipper that has time).
const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Default of `--attempts`.
const DEFAULT_ATTEMPTS: u32 = 3;

impl StoreArgs {
    /// The library's options.
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            force_path_style: self.path_style,
            attempt_timeout: Some(std::time::Duration::from_secs(
                self.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS),
            )),
            max_attempts: Some(self.attempts.unwrap_or(DEFAULT_ATTEMPTS)),
            ..StoreOptions::default()
        }
    }
}

/// Whether the authority part of `scheme://authority/...` has a user-info part.
fn has_userinfo(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'))
        .unwrap_or(false)
}

/// Open an existing store.
pub fn open(url: &str, args: &StoreArgs) -> Result<StoreRef, CliError> {
    if has_userinfo(url) {
        return Err(CliError::new(
            Exit::Usage,
            "the store URL must not carry credentials (use the AWS environment or config files)",
        ));
    }
    if let StoreUrl::Local(path) = StoreUrl::parse(url)? {
        check_local_dir(&path)?;
    }
    Ok(open_store(url, &args.options())?)
}

fn check_local_dir(path: &Path) -> Result<(), CliError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(CliError::new(
            Exit::NotFound,
            format!("store {} is not a directory", path.display()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CliError::new(
            Exit::NotFound,
            format!("store directory {} does not exist", path.display()),
        )),
        Err(e) => Err(CliError::new(
            Exit::Error,
            format!("cannot open store directory {}: {e}", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_refused_without_echo() {
        assert!(has_userinfo("s3://AKID:secret@bucket/prefix"));
        assert!(!has_userinfo("s3://bucket/a@b"));
        assert!(!has_userinfo("/tmp/store"));
        let e = open("s3://AKID:s3cr3t@bucket/p", &StoreArgs::default()).unwrap_err();
        assert_eq!(e.code, Exit::Usage);
        assert!(!e.message.contains("s3cr3t") && !e.message.contains("AKID"));
    }

    #[test]
    fn a_missing_local_store_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = open(missing.to_str().unwrap(), &StoreArgs::default()).unwrap_err();
        assert_eq!(e.code, Exit::NotFound);
        assert!(!missing.exists());
        let url = format!("file://{}", dir.path().display());
        assert!(open(&url, &StoreArgs::default()).is_ok());
    }
}
