//! placeholder
use super::*;
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub path: Option<String>,
}
impl HttpConfig {
    pub fn validate(&self) -> Vec<SpecProblem> {
        vec![]
    }
}
pub struct HttpProbe;
impl HttpProbe {
    pub fn new(_c: &HttpConfig, _b: &Path) -> Result<Self, String> {
        Ok(HttpProbe)
    }
}
impl Probe for HttpProbe {
    fn run<'a>(&'a self, _ctx: &'a ProbeContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async { Outcome::ok("") })
    }
}
