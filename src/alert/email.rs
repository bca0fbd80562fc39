//! `kind = "email"`: alerts by SMTP mail (delivery comes with the dispatcher).

use serde::Deserialize;

use crate::probe::SpecProblem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub smtp_host: String,
    pub smtp_port: Option<u16>,
    #[serde(default = "default_tls")]
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
}

fn default_tls() -> SmtpTls {
    SmtpTls::Starttls
}

impl EmailConfig {
    /// The port, defaulting by TLS mode (587 STARTTLS, 465 implicit TLS, 25 plain).
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }

    pub fn validate(&self) -> Vec<SpecProblem> {
        let mut p = Vec::new();
        if self.smtp_host.trim().is_empty() {
            p.push(SpecProblem::new("smtp_host", "must not be empty"));
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            p.push(SpecProblem::new(
                "password_file",
                "give password_env or password_file, not both",
            ));
        }
        if (self.password_env.is_some() || self.password_file.is_some()) && self.username.is_none()
        {
            p.push(SpecProblem::new("username", "a password needs a username"));
        }
        if !looks_like_address(&self.from) {
            p.push(SpecProblem::new(
                "from",
                format!("`{}` is not a mail address", self.from),
            ));
        }
        if self.to.is_empty() {
            p.push(SpecProblem::new("to", "needs at least one recipient"));
        }
        for a in self.to.iter().chain(&self.cc) {
            if !looks_like_address(a) {
                p.push(SpecProblem::new(
                    if self.to.contains(a) { "to" } else { "cc" },
                    format!("`{a}` is not a mail address"),
                ));
            }
        }
        p
    }
}

fn looks_like_address(a: &str) -> bool {
    let addr = match (a.rfind('<'), a.rfind('>')) {
        (Some(l), Some(r)) if l < r => &a[l + 1..r],
        _ => a,
    };
    match addr.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !addr.contains(char::is_whitespace)
        }
        None => false,
    }
}
