//! The request channel of a live reload: what triggers it (SIGHUP in `main`,
//! `POST /-/reload` in the API) hold a [`ReloadHandle`]; the agent owns the
//! [`ReloadRequests`] end and answers each request with a [`ReloadReply`].
//! It sits below both the agent and the API so that neither imports the other
//! for it; reading and applying the new config is the agent's business.

use tokio::sync::{mpsc, oneshot};

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReloadSummary {
    /// Probes in the new config.
    pub probes: usize,
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
    pub unchanged: usize,
}

/// A reload's answer: what changed, or every reason the new config was refused.
pub(crate) type ReloadReply = Result<ReloadSummary, Vec<String>>;

/// Asks a running agent to reload its config from its file.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<oneshot::Sender<ReloadReply>>);

impl ReloadHandle {
    /// Requests a reload and waits for its answer; `None` when the agent is gone.
    pub(crate) async fn reload(&self) -> Option<ReloadReply> {
        let (tx, rx) = oneshot::channel();
        self.0.send(tx).await.ok()?;
        rx.await.ok()
    }
}

/// The agent's end of `reload_channel`.
pub struct ReloadRequests {
    /// Kept so that the agent can hand a handle to the API it starts.
    pub(crate) handle: ReloadHandle,
    pub(crate) rx: mpsc::Receiver<oneshot::Sender<ReloadReply>>,
}

/// A handle for the triggers (SIGHUP) and the requests for `agent::run_reloadable`.
pub fn reload_channel() -> (ReloadHandle, ReloadRequests) {
    let (tx, rx) = mpsc::channel(4);
    let handle = ReloadHandle(tx);
    (handle.clone(), ReloadRequests { handle, rx })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_gets_the_agents_answer_and_none_once_it_is_gone() {
        let (handle, mut requests) = reload_channel();
        let answer = tokio::spawn(async move {
            let reply = requests.rx.recv().await.unwrap();
            reply.send(Err(vec!["bad".into()])).unwrap();
            requests
        });
        assert_eq!(handle.reload().await, Some(Err(vec!["bad".to_string()])));
        drop(answer.await.unwrap());
        assert_eq!(handle.reload().await, None);
    }
}
