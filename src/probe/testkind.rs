//! `kind = "test"`, compiled into unit tests only: a probe that returns the
//! status it is configured with, or panics when told to. It shows what a kind
//! is (this file and one line in `probe_kinds!`) and lets tests drive the
//! loader, the build and the runner without a network.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{BuildContext, ProbeKind};
use crate::outcome::{Category, Outcome, Probe, ProbeContext, Status};
use crate::spec::{BuildError, SpecProblem};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    /// `ok`, `warning`, `critical` or `unknown`.
    #[serde(default = "default_status")]
    pub status: String,
    /// Panic in `run` instead of returning (the runner must isolate it).
    #[serde(default)]
    pub panic: bool,
    /// Refuse to build, as a probe whose key file does not open would.
    #[serde(default)]
    pub fail_build: bool,
}

fn default_status() -> String {
    "ok".into()
}

fn status(text: &str) -> Option<Status> {
    match text {
        "ok" => Some(Status::Ok),
        "warning" => Some(Status::Warning),
        "critical" => Some(Status::Critical),
        "unknown" => Some(Status::Unknown),
        _ => None,
    }
}

impl ProbeKind for TestConfig {
    fn validate(&self) -> Vec<SpecProblem> {
        match status(&self.status) {
            Some(_) => Vec::new(),
            None => vec![SpecProblem::new(
                "status",
                "must be ok, warning, critical or unknown",
            )],
        }
    }

    fn build(&self, _: &BuildContext<'_>) -> Result<Arc<dyn Probe>, BuildError> {
        if self.fail_build {
            return Err(BuildError::new("fail_build", "told to fail"));
        }
        let status = status(&self.status)
            .ok_or_else(|| BuildError::new("status", "must be ok, warning, critical or unknown"))?;
        Ok(Arc::new(TestProbe {
            status,
            panic: self.panic,
        }))
    }
}

struct TestProbe {
    status: Status,
    panic: bool,
}

impl Probe for TestProbe {
    fn run<'a>(&'a self, _: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            if self.panic {
                panic!("the test probe was told to panic");
            }
            match self.status {
                Status::Ok => Outcome::ok("as configured"),
                other => Outcome::new(other, Some(Category::Internal), "as configured"),
            }
        })
    }
}
