//! placeholder
use super::*;
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig { pub path: Option<String> }
impl CertificateConfig { pub fn validate(&self) -> Vec<SpecProblem> { vec![] } }
pub struct CertificateProbe;
impl CertificateProbe { pub fn new(_c: &CertificateConfig, _b: &Path) -> Result<Self, String> { Ok(CertificateProbe) } }
impl Probe for CertificateProbe { fn run<'a>(&'a self, _ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> { Box::pin(async { Outcome::ok("") }) } }
