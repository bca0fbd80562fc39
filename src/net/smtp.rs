//! SMTP as the email channel, the push probe's end-to-end mail and the
//! certificate probe's `starttls = "smtp"` share it: the TLS modes of config,
//! their default ports, lettre's TLS settings, and a raw STARTTLS handshake up to
//! the point where TLS starts (for reading a server's certificate).

use std::path::Path;

use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How a connection to an SMTP server is secured (`tls = "starttls"`, `"tls"`,
/// `"none"` in config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    Starttls,
    Tls,
    None,
}

impl SmtpTls {
    /// The port when none is configured: 587 STARTTLS, 465 implicit TLS, 25 plain.
    pub(crate) fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// lettre's TLS setting for `mode`: the system roots plus `ca_file` (PEM), and
/// certificate checks off only when `verify` is false.
pub(crate) fn lettre_tls(
    host: &str,
    mode: SmtpTls,
    ca_file: Option<&Path>,
    verify: bool,
) -> Result<Tls, String> {
    if mode == SmtpTls::None {
        return Ok(Tls::None);
    }
    let mut params = TlsParameters::builder(host.to_string());
    if let Some(ca) = ca_file {
        params = params.add_root_certificate(read_ca(ca)?);
    }
    let params = params
        .dangerous_accept_invalid_certs(!verify)
        .build_rustls()
        .map_err(|e| format!("SMTP TLS setup: {e}"))?;
    Ok(if mode == SmtpTls::Tls {
        Tls::Wrapper(params)
    } else {
        Tls::Required(params)
    })
}

fn read_ca(path: &Path) -> Result<Certificate, String> {
    let pem = crate::file::read_blocking(path, crate::file::MAX_SIZE)
        .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
    Certificate::from_pem(&pem).map_err(|e| format!("ca_file {}: {e}", path.display()))
}

/// Why a STARTTLS handshake stopped before TLS.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StarttlsError {
    /// Reading or writing the connection failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server said something other than the dialogue expects.
    #[error("{0}")]
    Protocol(String),
}

/// Longest piece of a server's line quoted in an error.
const MAX_QUOTED: usize = 80;

/// Greets the server, asks for STARTTLS and returns the connection ready for
/// the TLS handshake. Lines are read bounded (4 KiB, 100 lines per reply), so a
/// server that streams garbage cannot grow memory.
pub(crate) async fn starttls(tcp: TcpStream) -> Result<TcpStream, StarttlsError> {
    let protocol = |m: String| StarttlsError::Protocol(m);
    let mut reader = BufReader::new(tcp);
    let (code, lines) = reply(&mut reader).await?;
    if code != 220 {
        return Err(protocol(format!("greeting `{}`", clip(&lines[0]))));
    }
    reader.get_mut().write_all(b"EHLO sonde\r\n").await?;
    let (code, lines) = reply(&mut reader).await?;
    if code != 250 {
        return Err(protocol(format!("EHLO refused: `{}`", clip(&lines[0]))));
    }
    let offers = lines.iter().any(|l| {
        l.get(4..)
            .is_some_and(|ext| ext.trim().eq_ignore_ascii_case("STARTTLS"))
    });
    if !offers {
        return Err(protocol("server does not offer STARTTLS".into()));
    }
    reader.get_mut().write_all(b"STARTTLS\r\n").await?;
    let (code, lines) = reply(&mut reader).await?;
    if code != 220 {
        return Err(protocol(format!("STARTTLS refused: `{}`", clip(&lines[0]))));
    }
    if !reader.buffer().is_empty() {
        // Plaintext sent before the handshake could be injected into it.
        return Err(protocol("unexpected data after the STARTTLS reply".into()));
    }
    Ok(reader.into_inner())
}

/// Reads one SMTP reply (all its lines) and returns its code and lines (never
/// empty).
async fn reply(reader: &mut BufReader<TcpStream>) -> Result<(u16, Vec<String>), StarttlsError> {
    let mut lines = Vec::new();
    loop {
        let mut buf = Vec::new();
        (&mut *reader)
            .take(4096)
            .read_until(b'\n', &mut buf)
            .await?;
        if buf.is_empty() {
            return Err(StarttlsError::Protocol(
                "connection closed by server".into(),
            ));
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| {
                StarttlsError::Protocol(format!("unexpected reply `{}`", clip(&line)))
            })?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return Ok((code, lines));
        }
        if lines.len() > 100 {
            return Err(StarttlsError::Protocol("reply too long".into()));
        }
    }
}

/// A server's line as an error may quote it: escaped and clipped.
fn clip(s: &str) -> String {
    crate::human::text::clip(&crate::human::text::escape(s), MAX_QUOTED).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_follow_the_tls_mode() {
        assert_eq!(SmtpTls::Starttls.default_port(), 587);
        assert_eq!(SmtpTls::Tls.default_port(), 465);
        assert_eq!(SmtpTls::None.default_port(), 25);
    }

    /// Runs `starttls` against a server that answers with `script` after
    /// reading each command line.
    async fn dialogue(script: &'static [&'static str]) -> Result<(), StarttlsError> {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut reader = BufReader::new(tcp);
            for (i, answer) in script.iter().enumerate() {
                if i > 0 {
                    let mut line = String::new();
                    reader.read_line(&mut line).await.unwrap();
                }
                reader.get_mut().write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let result = starttls(tcp).await.map(|_| ());
        server.await.unwrap();
        result
    }

    #[tokio::test]
    async fn the_handshake_stops_where_tls_starts() {
        dialogue(&["220 hi\r\n", "250-hi\r\n250 STARTTLS\r\n", "220 go\r\n"])
            .await
            .unwrap();
        let e = dialogue(&["220 hi\r\n", "250-hi\r\n250 SIZE 10\r\n"])
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "server does not offer STARTTLS");
        let e = dialogue(&["554 go away\r\n"]).await.unwrap_err();
        assert_eq!(e.to_string(), "greeting `554 go away`");
        let e = dialogue(&["220 hi\r\n", "250 STARTTLS\r\n", "220 go\r\nEVIL\r\n"])
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "unexpected data after the STARTTLS reply");
    }
}
