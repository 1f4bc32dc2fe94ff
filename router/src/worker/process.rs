//! The process behind a worker connection, as its supervisor sees it: something that ends, and
//! can be made to end. Real workers are OS processes; the router's own tests run in-memory
//! ones.

use futures::future::BoxFuture;

pub trait Process: Send {
    /// Waits until it has ended; says how, in words ("exit status: 0", "signal: 9 (SIGKILL)").
    fn wait(&mut self) -> BoxFuture<'_, String>;
    /// Makes it end now, without waiting for that.
    fn kill(&mut self);
}

impl Process for tokio::process::Child {
    fn wait(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            match tokio::process::Child::wait(self).await {
                Ok(status) => status.to_string(),
                Err(e) => e.to_string(),
            }
        })
    }

    fn kill(&mut self) {
        let _ = self.start_kill();
    }
}
