//! The lab's SMTP listener, standing for the test mailbox's server: it accepts
//! mail for known mailboxes (AUTH PLAIN/LOGIN accepted, no TLS), and each mail
//! raises the mailbox's unseen count and pushes the new badge to its devices.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{Lab, MailEvent};

const MAX_LINE: usize = 4096;
const MAX_MESSAGE: usize = 10 * 1024 * 1024;
const IDLE: Duration = Duration::from_secs(60);
const HOST: &str = "lab.sonde.local";

pub(crate) async fn serve(listener: TcpListener, lab: Lab, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let lab = lab.clone();
                tokio::spawn(async move {
                    if let Err(e) = session(stream, lab).await {
                        tracing::debug!(error = %e, "lab SMTP session ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "lab SMTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads one line (CRLF or LF), bounded; None at EOF.
async fn read_line(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = tokio::time::timeout(
        IDLE,
        (&mut *r)
            .take(MAX_LINE as u64 + 2)
            .read_until(b'\n', &mut buf),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??;
    if n == 0 {
        return Ok(None);
    }
    if !buf.ends_with(b"\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long",
        ));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

use tokio::io::AsyncReadExt;

fn address(arg: &str) -> Option<String> {
    let start = arg.find('<')?;
    let end = arg[start..].find('>')? + start;
    Some(arg[start + 1..end].trim().to_ascii_lowercase())
}

async fn session(stream: TcpStream, lab: Lab) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(format!("220 {HOST} ESMTP sonde lab\r\n").as_bytes())
        .await?;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    while let Some(line) = read_line(&mut r).await? {
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        let reply: String = match verb.as_str() {
            "EHLO" => format!(
                "250-{HOST}\r\n250-AUTH PLAIN LOGIN\r\n250-SIZE {MAX_MESSAGE}\r\n250 8BITMIME\r\n"
            ),
            "HELO" => format!("250 {HOST}\r\n"),
            "AUTH" => {
                let mech = arg
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                match mech.as_str() {
                    "PLAIN" if arg.split_whitespace().nth(1).is_some() => {
                        "235 2.7.0 Authentication successful\r\n".into()
                    }
                    "PLAIN" => {
                        w.write_all(b"334 \r\n").await?;
                        read_line(&mut r).await?;
                        "235 2.7.0 Authentication successful\r\n".into()
                    }
                    "LOGIN" => {
                        if arg.split_whitespace().nth(1).is_none() {
                            w.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                            read_line(&mut r).await?;
                        }
                        w.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                        read_line(&mut r).await?;
                        "235 2.7.0 Authentication successful\r\n".into()
                    }
                    _ => "504 5.5.4 Unrecognized authentication type\r\n".into(),
                }
            }
            "MAIL" => match address(&arg) {
                Some(a) => {
                    from = Some(a);
                    rcpts.clear();
                    "250 2.1.0 Sender OK\r\n".into()
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".into(),
            },
            "RCPT" => match (from.is_some(), address(&arg)) {
                (false, _) => "503 5.5.1 Need MAIL first\r\n".into(),
                (true, None) => "501 5.5.4 Syntax: RCPT TO:<address>\r\n".into(),
                (true, Some(a)) if lab.state().mailboxes.contains_key(&a) => {
                    rcpts.push(a);
                    "250 2.1.5 Recipient OK\r\n".into()
                }
                (true, Some(_)) => "550 5.1.1 Recipient not found\r\n".into(),
            },
            "DATA" if rcpts.is_empty() => "503 5.5.1 Need RCPT first\r\n".into(),
            "DATA" => {
                w.write_all(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n")
                    .await?;
                let mut bytes = 0usize;
                let mut subject = String::new();
                let mut in_headers = true;
                loop {
                    let Some(l) = read_line(&mut r).await? else {
                        return Ok(());
                    };
                    if l == "." {
                        break;
                    }
                    bytes += l.len() + 2;
                    if bytes > MAX_MESSAGE {
                        w.write_all(b"552 5.3.4 Message too big\r\n").await?;
                        return Ok(());
                    }
                    if in_headers {
                        if l.is_empty() {
                            in_headers = false;
                        } else if let Some(s) = l
                            .strip_prefix("Subject:")
                            .or_else(|| l.strip_prefix("subject:"))
                        {
                            subject = s.trim().chars().take(200).collect();
                        }
                    }
                }
                let now = lab.now();
                lab.state().record_mail(MailEvent {
                    from: from.clone().unwrap_or_default(),
                    to: rcpts.clone(),
                    subject,
                    bytes,
                    at: now,
                });
                for a in rcpts.drain(..) {
                    super::push::mail_arrived(&lab, &a).await;
                }
                from = None;
                format!("250 2.6.0 Queued as {}\r\n", crate::guid::random())
            }
            "RSET" => {
                from = None;
                rcpts.clear();
                "250 2.0.0 OK\r\n".into()
            }
            "NOOP" => "250 2.0.0 OK\r\n".into(),
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            "STARTTLS" => "502 5.5.1 STARTTLS is not offered by the lab\r\n".into(),
            _ => "502 5.5.2 Command not recognized\r\n".into(),
        };
        w.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}
