//! Once a second: measure each ready worker's memory and tell the supervisor, then tick it
//! (idle TTLs, growth over the budget).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Registry, State};
use crate::supervisor::machine::Input;

/// How often the housekeeping runs.
pub const PERIOD: Duration = Duration::from_secs(1);

impl Registry {
    /// Runs until the server stops.
    pub async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let ready: Vec<Arc<super::Live>> = self
                .views
                .load()
                .values()
                .filter_map(|s| match &**s {
                    State::Ready(l) => Some(l.clone()),
                    _ => None,
                })
                .collect();
            for l in ready {
                if let Some(bytes) = model_bucket_shared::mem::rss_bytes(Some(l.pid)) {
                    self.tell(Input::Measured { model: l.model.clone(), gen: l.gen, bytes });
                }
            }
            self.tell(Input::Tick);
        }
    }
}
