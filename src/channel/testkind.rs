//! `kind = "test"`, compiled into unit tests only: a channel that accepts
//! every alert, or refuses each with a permanent error when told to. It shows
//! what a channel kind is (this file and one line in `channel_kinds!`).

use serde::Deserialize;

use super::{Alert, ChannelContext, ChannelKind, DeliveryError};
use crate::spec::{BuildError, SpecProblem};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestChannelConfig {
    /// Refuse every delivery.
    #[serde(default)]
    pub refuse: bool,
}

pub struct TestChannel {
    refuse: bool,
}

impl ChannelKind for TestChannel {
    type Config = TestChannelConfig;

    fn validate(_: &TestChannelConfig) -> Vec<SpecProblem> {
        Vec::new()
    }

    fn build(config: &TestChannelConfig, _: &ChannelContext<'_>) -> Result<Self, BuildError> {
        Ok(TestChannel {
            refuse: config.refuse,
        })
    }

    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        if self.refuse {
            return Err(DeliveryError::permanent(format!("refused {}", alert.key)));
        }
        Ok(())
    }
}
