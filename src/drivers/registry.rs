//! The driver registry: every driver planrun knows, by the name plans use. Adding a driver is
//! one line in `DRIVERS`.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Driver;
use super::{exec, fleet, http, llm, sleep, swarm};
use crate::plan::Catalog;
use crate::plan::de::{DeError, from_node};
use crate::plan::node::Node;

pub struct DriverSpec {
    pub name: &'static str,
    pub parse: fn(&Node) -> Result<Arc<dyn Driver>, DeError>,
}

/// Deserialize a driver's config from its fields.
pub fn parse_as<T: DeserializeOwned + Driver + 'static>(node: &Node) -> Result<Arc<dyn Driver>, DeError> {
    from_node::<T>(node).map(|d| Arc::new(d) as Arc<dyn Driver>)
}

/// Plain-data view of a driver config.
pub fn config_of<T: Serialize>(cfg: &T) -> serde_json::Value {
    serde_json::to_value(cfg).unwrap_or(serde_json::Value::Null)
}

/// Every driver planrun knows, by the name plans use.
pub static DRIVERS: &[DriverSpec] = &[
    DriverSpec { name: "exec", parse: parse_as::<exec::Exec> },
    DriverSpec { name: "fleet", parse: parse_as::<fleet::Fleet> },
    DriverSpec { name: "http", parse: parse_as::<http::Http> },
    DriverSpec { name: "llm", parse: parse_as::<llm::Llm> },
    DriverSpec { name: "sleep", parse: parse_as::<sleep::Sleep> },
    DriverSpec { name: "swarm", parse: parse_as::<swarm::Swarm> },
];

pub fn find(name: &str) -> Option<&'static DriverSpec> {
    DRIVERS.iter().find(|d| d.name == name)
}

/// The registry as the plan loader sees it: `plan::load_file_with(path, opts, &Registry)`.
pub struct Registry;

impl Catalog for Registry {
    type Driver = Arc<dyn Driver>;

    fn names(&self) -> Vec<&'static str> {
        DRIVERS.iter().map(|d| d.name).collect()
    }

    fn parse(&self, name: &str, fields: &Node) -> Option<Result<Arc<dyn Driver>, DeError>> {
        find(name).map(|spec| (spec.parse)(fields))
    }
}
