//! The `sleep` driver: its (empty) config and one iteration, a wait on the run clock that a
//! cancelled stage cuts short.

use serde::{Deserialize, Serialize};

use crate::drivers::{BoxFuture, Driver, Outcome, StageContext, Status, config_of};
use crate::plan::model::StageCommon;
use crate::plan::{FieldError, StageDriver};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Sleep {}

impl StageDriver for Sleep {
    fn config(&self) -> serde_json::Value {
        config_of(self)
    }

    fn describe(&self) -> String {
        "wait for the stage duration".into()
    }

    fn simulated(&self) -> bool {
        true
    }

    fn check(&self, stage: &StageCommon) -> Result<(), FieldError> {
        match stage.duration {
            Some(_) => Ok(()),
            None => Err("a sleep stage needs a `duration`".into()),
        }
    }
}

impl Driver for Sleep {
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let want = ctx.duration.unwrap_or_default();
            let start = ctx.clock.elapsed_ms();
            let status = tokio::select! {
                _ = ctx.clock.sleep(want) => Status::Passed,
                _ = ctx.cancel.cancelled() => Status::Interrupted,
            };
            let slept = ctx.clock.elapsed_ms() - start;
            ctx.events.emit(
                ctx.events.event("sleep").name(ctx.stage.as_str()).ok(status == Status::Passed).latency_ms(slept),
            );
            Outcome { status, message: None }
        })
    }
}
