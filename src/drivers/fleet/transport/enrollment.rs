//! Which agent may speak in which name. At enrollment each agent gets a fresh random token (in
//! its environment, `PLANRUN_AGENT_TOKEN`); a response or heartbeat in an enrolled agent's name
//! is that agent's only if it carries that token. This is what stops agent-4 answering for a
//! silent agent-5 (`agent-5--<id>.json` written by agent-4 is refused, not counted as agent-5's
//! success). Agents run as the same user as planrun, so this guards against agents that are
//! wrong, not against one that reads another's environment on purpose.

use std::collections::HashMap;
use std::sync::RwLock;

use rand::Rng;

use super::contract::Incoming;

#[derive(Default)]
pub struct Enrollment {
    tokens: RwLock<HashMap<String, String>>,
}

impl Enrollment {
    /// A fresh token for `agent_id`, replacing any earlier one.
    pub fn admit(&self, agent_id: &str) -> String {
        let token = format!("{:032x}", rand::rng().random::<u128>());
        let mut t = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        t.insert(agent_id.to_string(), token.clone());
        token
    }

    /// Ok when `token` is `agent_id`'s, or when `agent_id` was never enrolled (the coordinator
    /// reports unknown agents itself); otherwise why not.
    pub fn check(&self, agent_id: &str, token: Option<&str>) -> Result<(), String> {
        let t = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let Some(want) = t.get(agent_id) else { return Ok(()) };
        match token {
            Some(got) if got == want => Ok(()),
            Some(_) => Err(format!(
                "refused: in the name of {agent_id} but with a token that is not its own (forged by another agent, \
                 or left by an earlier run of it)"
            )),
            None => Err(format!(
                "refused: in the name of {agent_id} without a token (every response and heartbeat carries the \
                 agent's PLANRUN_AGENT_TOKEN as `token`)"
            )),
        }
    }

    /// Pass `inc` on if it is what its agent sent, else turn it into `Incoming::Bad` (from `file`).
    pub fn screen(&self, inc: Incoming, file: impl FnOnce() -> String) -> Incoming {
        let (agent, token, what) = match &inc {
            Incoming::Response(r) => (&r.agent_id, r.token.as_deref(), "response"),
            Incoming::Status(s) => (&s.agent_id, s.token.as_deref(), "heartbeat"),
            Incoming::Bad { .. } | Incoming::Notice(_) | Incoming::Join { .. } => return inc,
        };
        match self.check(agent, token) {
            Ok(()) => inc,
            Err(e) => Incoming::Bad { file: file(), agent: Some(agent.clone()), error: format!("{what} {e}") },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_enrolled_token_speaks_for_its_agent() {
        let e = Enrollment::default();
        let a = e.admit("agent-1");
        let b = e.admit("agent-2");
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(e.check("agent-1", Some(&a)), Ok(()));
        assert!(e.check("agent-1", Some(&b)).unwrap_err().contains("not its own"));
        assert!(e.check("agent-1", None).unwrap_err().contains("without a token"));
        // Unknown agents are the coordinator's to report.
        assert_eq!(e.check("agent-9", None), Ok(()));
    }

    #[test]
    fn a_restart_revokes_the_old_token() {
        let e = Enrollment::default();
        let old = e.admit("agent-1");
        let new = e.admit("agent-1");
        assert!(e.check("agent-1", Some(&old)).is_err());
        assert_eq!(e.check("agent-1", Some(&new)), Ok(()));
    }
}
