//! An S3-compatible object store for the tests: moto's server on loopback.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{free_port, http, python_with};

/// moto's S3 server on a free loopback port with one bucket, stopped when dropped: the
/// shared tiers of the tests that need an S3-compatible object store.
pub struct MotoS3 {
    proc: std::process::Child,
    pub endpoint: String,
    pub bucket: String,
}

impl MotoS3 {
    /// Starts the server (from the e2e Python environment) and creates `bucket`.
    pub fn start(bucket: &str) -> MotoS3 {
        let python = python_with("import moto.server");
        let port = free_port();
        let proc = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto S3 server");
        let server = MotoS3 { proc, endpoint: format!("http://127.0.0.1:{port}"), bucket: bucket.to_string() };
        let client = http();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client.try_call("PUT", &format!("{}/{bucket}", server.endpoint), None).is_some_and(|r| r.status == 200) {
            assert!(Instant::now() < deadline, "the S3 server did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// The storage flags of a process whose four tiers are `<prefix>/<tier>` in the bucket.
    pub fn storage_args(&self, prefix: &str) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        for tier in ["hot", "warm", "cold", "archive"] {
            args.extend([format!("--{tier}-url"), format!("s3://{}/{prefix}/{tier}", self.bucket)]);
        }
        for option in [
            format!("aws_endpoint={}", self.endpoint),
            "aws_allow_http=true".into(),
            "aws_access_key_id=test".into(),
            "aws_secret_access_key=test".into(),
            "aws_region=us-east-1".into(),
        ] {
            args.extend(["--storage-option".to_string(), option]);
        }
        args
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}
